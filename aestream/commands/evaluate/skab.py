"""``evaluate skab``: the SKAB benchmark protocol run through the worker's own detection path.

For each experiment file in a SKAB folder: the first ``n_train`` (400) rows are training data (preprocessing and
model are fit there, the last ``validation_fraction`` of their windows calibrate the threshold, exactly as
:func:`~aestream.training.fit.fit_scorer` does for the worker); every later row is a test point, scored causally by
the window that ends on it (earlier training rows fill the first windows). Predictions come from ``fit_scorer`` →
``Scorer.score`` → :func:`~aestream.training.build.calibrate_threshold` → ``AlarmRule`` (smoothing, k-of-n), the
functions ``train_bundle`` and the worker use; the rule's state runs on from the validation windows, which end just
before the first test point, as a live stream's would. Metrics are SKAB's, pooled over files
(:mod:`aestream.commands.evaluate.metrics`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aestream.commands.evaluate.metrics import (
    ChangepointMatch,
    Confusion,
    binary_scores,
    changepoint_edges,
    confusion,
    detection_delays,
    match_changepoints,
    nab_score,
)
from aestream.config import ModelConfig, ThresholdConfig
from aestream.detect.thresholds import AlarmRule, causal_smooth
from aestream.errors import DataError
from aestream.training.build import calibrate_threshold, fit_from_config
from aestream.training.fit import sliding_windows

__all__ = [
    "NAB_WINDOW_S",
    "N_TRAIN",
    "FileResult",
    "detect_file",
    "evaluate_folder",
    "list_skab_files",
    "load_skab_file",
    "run_skab",
    "skab_metrics",
]

log = logging.getLogger(__name__)

N_TRAIN = 400
NAB_WINDOW_S = 60.0
_LABELS = ("anomaly", "changepoint")
_NS = 1_000_000_000


def list_skab_files(folder: str | Path) -> list[Path]:
    """The ``*.csv`` experiment files of a SKAB folder, in numeric order of their names."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"SKAB folder {root} does not exist: pass a folder such as data/skab/valve1")
    files = sorted(root.glob("*.csv"), key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0,
                                                      p.stem))
    if not files:
        raise FileNotFoundError(f"SKAB folder {root} holds no .csv file: pass a folder of experiment files")
    return files


def load_skab_file(path: str | Path) -> pd.DataFrame:
    """One experiment: sensor columns, ``anomaly`` and ``changepoint`` (0/1), indexed by ``datetime``."""
    frame = pd.read_csv(path, sep=";", parse_dates=["datetime"], index_col="datetime")
    missing = [c for c in _LABELS if c not in frame.columns]
    if missing:
        raise DataError(f"SKAB file {path} lacks column(s) {missing}: expected datetime;<sensors>;anomaly;changepoint")
    return frame.sort_index()


@dataclass(frozen=True)
class FileResult:
    """One file's test part: times, labels, the (smoothed) scores, the threshold and the 0/1 predictions."""

    name: str
    times: np.ndarray
    anomaly: np.ndarray
    changepoint: np.ndarray
    scores: np.ndarray
    threshold: float
    pred: np.ndarray


def detect_file(
    frame: pd.DataFrame,
    model_cfg: ModelConfig,
    threshold_cfg: ThresholdConfig,
    window_size: int,
    *,
    name: str = "",
    n_train: int = N_TRAIN,
    input_smoothing: int | None = None,
) -> FileResult:
    """Train on the first ``n_train`` rows of one experiment and predict every later row.

    ``input_smoothing`` (see :class:`~aestream.detect.features.Preprocessor`) defaults to ``model_cfg.input_smoothing``
    where the config has that key, else 1 (off).
    """
    channels = [c for c in frame.columns if c not in _LABELS]
    if n_train < 2 * window_size or len(frame) <= n_train:
        raise DataError(f"SKAB file {name or '?'} has {len(frame)} rows: need more than n_train={n_train} and "
                         f"n_train >= 2 × window_size ({window_size}); lower stream.window_size")
    values = frame[channels].to_numpy(dtype=np.float64)
    if input_smoothing is not None:
        model_cfg = dataclasses.replace(model_cfg, input_smoothing=input_smoothing)
    result = fit_from_config([values[:n_train]], channels, window_size, model_cfg,
                             detrend_channels=_match_channels(model_cfg.detrend_channels, channels))
    scores = result.scorer.score(sliding_windows(values[n_train - window_size + 1:], window_size)).scores
    t = threshold_cfg
    threshold = calibrate_threshold(result.validation_scores, t)
    rule = AlarmRule(threshold, k=t.k, n=t.n, smoothing=t.smoothing)
    history = np.concatenate([result.validation_scores, scores])  # validation windows end just before the test
    pred = rule.apply(history)[-len(scores):].astype(np.int64)
    smoothed = causal_smooth(history, t.smoothing)[-len(scores):]
    test = frame.iloc[n_train:]
    return FileResult(name, test.index.to_numpy(dtype="datetime64[ns]"), test["anomaly"].to_numpy(dtype=np.int64),
                      test["changepoint"].to_numpy(dtype=np.int64), smoothed, threshold, pred)


def _match_channels(wanted: Sequence[str], channels: Sequence[str]) -> list[str]:
    by_lower = {c.lower(): c for c in channels}
    found = [by_lower[w.lower()] for w in wanted if w.lower() in by_lower]
    absent = [w for w in wanted if w.lower() not in by_lower]
    if absent:
        log.warning("detrend channel(s) %s are not SKAB channels %s: not detrended here", absent, list(channels))
    return found


def skab_metrics(results: Sequence[FileResult], window_s: float = NAB_WINDOW_S) -> dict[str, Any]:
    """SKAB's metrics pooled over files: F1, FAR %, MAR %, NAB (3 profiles), mean detection delay, per-file rows."""
    total, matches, rows = Confusion(), list[ChangepointMatch](), list[dict[str, Any]]()
    for r in results:
        c = confusion(r.anomaly, r.pred)
        m = _match(r, window_s)
        total, matches = total + c, [*matches, m]
        f1, far, mar = binary_scores(c)
        rows.append({"name": r.name, "n_test": len(r.pred), "threshold": round(r.threshold, 6), "tp": c.tp,
                     "fp": c.fp, "fn": c.fn, "tn": c.tn, "f1": _round(f1, 4), "far": _round(far, 2),
                     "mar": _round(mar, 2), "nab_standard": _round(nab_score([m], "standard"), 2)})
    f1, far, mar = binary_scores(total)
    delays = detection_delays(matches)
    return {
        "f1": _round(f1, 4),
        "far": _round(far, 2),
        "mar": _round(mar, 2),
        "nab_standard": _round(nab_score(matches, "standard"), 2),
        "nab_lowfp": _round(nab_score(matches, "lowfp"), 2),
        "nab_lowfn": _round(nab_score(matches, "lowfn"), 2),
        "mean_delay_s": _round(float(np.mean(delays)) / _NS, 2) if delays else None,
        "files": rows,
    }


def _match(r: FileResult, window_s: float) -> ChangepointMatch:
    ns = r.times.astype("datetime64[ns]").astype(np.int64)
    return match_changepoints(ns[r.changepoint == 1], ns[changepoint_edges(r.pred) == 1], window_s * _NS)


def _round(x: float, digits: int) -> float | None:
    return None if x != x else round(float(x), digits)


def evaluate_folder(
    path: str | Path,
    model_cfg: ModelConfig | None = None,
    threshold_cfg: ThresholdConfig | None = None,
    window_size: int = 32,
    *,
    n_train: int = N_TRAIN,
    input_smoothing: int | None = None,
    plot_dir: str | Path | None = None,
    predictions_dir: str | Path | None = None,
) -> tuple[dict[str, Any], list[FileResult]]:
    """Run the protocol on every file of a SKAB folder: the metrics dict and each file's result."""
    model_cfg, threshold_cfg = model_cfg or ModelConfig(), threshold_cfg or ThresholdConfig()
    t0, results = time.monotonic(), []
    for f in list_skab_files(path):
        r = detect_file(load_skab_file(f), model_cfg, threshold_cfg, window_size, name=f.stem, n_train=n_train,
                        input_smoothing=input_smoothing)
        log.info("SKAB %s: %d test points, threshold %.4g, %d predicted anomalous", f.name, len(r.pred),
                 r.threshold, int(r.pred.sum()))
        results.append(r)
    metrics = skab_metrics(results)
    if predictions_dir is not None:
        write_predictions(results, predictions_dir)
    if plot_dir is not None:
        from aestream.commands.evaluate.plots import plot_results

        plot_results(results, plot_dir)
    log.info("SKAB %s: F1 %s, FAR %s %%, MAR %s %%, NAB standard %s in %.1f s", path, metrics["f1"], metrics["far"],
             metrics["mar"], metrics["nab_standard"], time.monotonic() - t0)
    return metrics, results


def write_predictions(results: Sequence[FileResult], out_dir: str | Path) -> None:
    """One CSV per file with columns ``datetime, anomaly, changepoint, pred``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for r in results:
        pd.DataFrame({"datetime": r.times, "anomaly": r.anomaly, "changepoint": r.changepoint, "pred": r.pred}).to_csv(
            out / f"{r.name}.csv", index=False)


def run_skab(
    path: str | Path,
    model_cfg: ModelConfig,
    threshold_cfg: ThresholdConfig,
    window_size: int,
    plot_dir: str | Path | None = None,
    predictions_dir: str | Path | None = None,
    *,
    input_smoothing: int | None = None,
) -> dict[str, Any]:
    """The CLI's entry: evaluate a SKAB folder, optionally plotting and writing predictions; the metrics dict."""
    metrics, _ = evaluate_folder(path, model_cfg, threshold_cfg, window_size, input_smoothing=input_smoothing,
                                 plot_dir=plot_dir, predictions_dir=predictions_dir)
    return metrics
