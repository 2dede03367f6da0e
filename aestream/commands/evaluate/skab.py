"""``evaluate skab``: the SKAB benchmark through the detector the daemon runs.

Each experiment file is one sensor. The shared model is trained by :func:`~aestream.training.build.train_bundle`
(as ``aestream train`` does) on the first ``n_train`` (400) rows of every file — SKAB's training part — or on a
file given with ``--train``; every sensor then calibrates its own baseline on its first ``baselines.n_readings``
readings, and every later row is a test point, predicted anomalous when the window ending on it is in alarm (an
anomaly event). Two transports, one detector:

* offline (the fast inner loop): the worker of :func:`aestream.app.build_app` in this process, fed the readings
  as records, its events collected from its sink;
* ``--stream``: the readings published to a real broker (one message per reading, key = the sensor), the real
  ``aestream run`` as a subprocess with the given config (baselines and all), the events read back from the output
  topic.

Metrics are SKAB's, pooled over files (:mod:`aestream.commands.evaluate.metrics`).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from aestream.app import build_app
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
from aestream.config import SECRET_ENV, Config
from aestream.errors import DataError, first_line
from aestream.models.bundle import ModelBundle
from aestream.models.store import ModelStore
from aestream.stream.codec import encode_reading
from aestream.stream.messages import Outgoing, Partition, Record
from aestream.stream.stages import Scored, Stage
from aestream.training.build import train_bundle
from aestream.training.datasets import channel_values, read_segments

__all__ = [
    "NAB_WINDOW_S",
    "N_TRAIN",
    "FileResult",
    "evaluate_folder",
    "list_skab_files",
    "load_skab_file",
    "run_skab",
    "skab_metrics",
    "write_predictions",
]

log = logging.getLogger(__name__)

N_TRAIN = 400
NAB_WINDOW_S = 60.0
_LABELS = ("anomaly", "changepoint")
_NS = 1_000_000_000
_SKIP_FOLDERS = ("anomaly-free",)


def list_skab_files(folder: str | Path) -> list[Path]:
    """The experiment files of a SKAB folder: its own ``*.csv`` or, in SKAB's layout, those of its sub-folders
    (``valve1/``, ``valve2/``, ``other/``; ``anomaly-free/`` holds no labels and is left out), numeric order."""
    root = Path(folder)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(f"SKAB folder {root} {what}: pass a folder such as data/skab/valve1")
    files = sorted(root.glob("*.csv"), key=_numeric)
    if not files:
        files = [f for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in _SKIP_FOLDERS)
                 for f in sorted(d.glob("*.csv"), key=_numeric)]
    if not files:
        raise DataError(f"SKAB folder {root} holds no .csv file: pass a folder of experiment files")
    return files


def _numeric(p: Path) -> tuple[bool, int, str]:
    return not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0, p.stem


def _sensor(path: Path, root: Path) -> str:
    """A file's sensor id: its path below ``root`` without the suffix (``valve1/3``; ``3`` in a flat folder)."""
    return path.relative_to(root).with_suffix("").as_posix()


def load_skab_file(path: str | Path) -> pd.DataFrame:
    """One experiment: sensor columns, ``anomaly`` and ``changepoint`` (0/1), indexed by ``datetime``."""
    frame = _read_skab_csv(path)
    missing = [c for c in _LABELS if c not in frame.columns]
    if missing:
        raise DataError(f"SKAB file {path} lacks column(s) {missing}: expected datetime;<sensors>;anomaly;changepoint")
    return frame.sort_index()


@dataclass(frozen=True)
class FileResult:
    """One file's test part: times, labels, the scores known (NaN elsewhere), the threshold and 0/1 predictions."""

    name: str
    times: np.ndarray
    anomaly: np.ndarray
    changepoint: np.ndarray
    scores: np.ndarray
    threshold: float
    pred: np.ndarray


@dataclass(frozen=True)
class _Experiment:
    sensor: str
    frame: pd.DataFrame
    ts_ms: np.ndarray
    values: np.ndarray


def _experiments(files: Sequence[Path], root: Path, channels: Sequence[str]) -> list[_Experiment]:
    out = []
    for f in tqdm(files, desc="SKAB", unit="file", file=sys.stderr, leave=False, disable=None):
        frame = load_skab_file(f)
        missing = [c for c in channels if c not in frame.columns]
        if missing:
            raise DataError(f"SKAB file {f} lacks the configured channel(s) {missing}: set stream.channels to its "
                            f"columns {[c for c in frame.columns if c not in _LABELS]}")
        ts = frame.index.to_numpy(dtype="datetime64[ms]").astype(np.int64)
        try:
            values = channel_values(frame.reset_index(drop=True), channels)
        except DataError as e:
            raise DataError(f"SKAB file {f}: {e}") from None
        out.append(_Experiment(_sensor(f, root), frame, ts, values))
    return out


def _read_skab_csv(path: str | Path) -> pd.DataFrame:
    """A SKAB-format CSV (``;``-separated, a ``datetime`` column) indexed by time; a file that is not one is a
    :class:`DataError` naming it."""
    try:
        return pd.read_csv(path, sep=";", parse_dates=["datetime"], index_col="datetime")
    except (ValueError, OSError) as e:  # pandas' parse errors are ValueErrors
        why = first_line(e)
        raise DataError(f"SKAB file {path} cannot be read ({why}): expected datetime;<sensors>;anomaly;changepoint, "
                        "separated by ';'") from None


def shared_bundle(experiments: Sequence[_Experiment], cfg: Config, n_train: int,
                  train_file: str | Path | None = None) -> ModelBundle:
    """The fleet's model: trained on ``train_file`` (a SKAB-format CSV) or on the first ``n_train`` rows of every
    experiment, by the same functions as ``aestream train``: segments cut wherever two readings are more than
    ``stream.max_gap_ms`` apart (:func:`~aestream.training.datasets.read_segments`: no window spans a gap)."""
    def segments_of(frame: pd.DataFrame) -> list[np.ndarray]:  # indexed by time, as _experiments reads them
        return read_segments(frame.reset_index(), cfg.stream.channels, "datetime", None, cfg.stream.max_gap_ms)

    if train_file is not None:
        segments = segments_of(_read_skab_csv(train_file))
        source = str(train_file)
    else:
        segments = [s for e in experiments for s in segments_of(e.frame.iloc[:n_train])]
        source = f"the first {n_train} rows of {len(experiments)} SKAB files"
    bundle = train_bundle(segments, cfg.stream, cfg.model, cfg.threshold, info={"trained_on": source})
    bundle.version = "v0001"
    return bundle


def evaluate_folder(
    path: str | Path,
    cfg: Config,
    *,
    n_train: int = N_TRAIN,
    stream: bool = False,
    train_file: str | Path | None = None,
    config_path: str | Path | None = None,
    plot_dir: str | Path | None = None,
    predictions_dir: str | Path | None = None,
) -> tuple[dict[str, Any], list[FileResult]]:
    """Run the protocol on every file of a SKAB folder: the metrics dict and each file's result."""
    t0 = time.monotonic()
    if cfg.baselines.mode != "off" and cfg.baselines.n_readings > n_train:
        raise DataError(f"baselines.n_readings = {cfg.baselines.n_readings} is more than the {n_train} rows of each "
                        f"file the protocol trains on: a sensor would calibrate on test rows (unscored, counted as "
                        f"normal); use {n_train} or fewer for an evaluation")
    cfg = cfg.replace(baselines={"finetune_blocking": True})  # each sensor's own model at once: a deterministic run
    root = Path(path)
    files = list_skab_files(root)
    experiments = _experiments(files, root, cfg.stream.channels)
    for e in experiments:
        if len(e.frame) <= n_train:
            raise DataError(f"SKAB file {e.sensor} has {len(e.frame)} rows: need more than n_train={n_train}")
    bundle = shared_bundle(experiments, cfg, n_train, train_file)
    log.info("shared %s model trained in %.1f s; threshold %.4g", bundle.family, time.monotonic() - t0,
             bundle.threshold)
    scored: dict[str, dict[int, tuple[float, float]]] = {}
    if stream:
        events = _through_kafka(experiments, cfg, bundle)
    else:
        events, scored = _in_process(experiments, cfg, bundle)
    results = [_file_result(e, n_train, events.get(e.sensor, []), scored.get(e.sensor)) for e in experiments]
    metrics = skab_metrics(results)
    metrics["seconds"] = round(time.monotonic() - t0, 1)
    metrics["transport"] = "kafka" if stream else "in-process"
    metrics["baselines"] = cfg.baselines.mode
    # test points no window scored (one that ends in a gap, longer than stream.max_gap_ms, restarts the window):
    # counted as predicted normal, as the protocol counts a point without a prediction. Through Kafka only the
    # windows that emitted come back, so the others' scores are not known: not counted (None)
    metrics["unscored_points"] = None if stream else int(sum(np.isnan(r.scores).sum() for r in results))
    if predictions_dir is not None:
        write_predictions(results, predictions_dir)
    if plot_dir is not None:
        from aestream.commands.evaluate.plots import plot_results

        plot_results(results, plot_dir)
    log.info("SKAB %s: F1 %s, FAR %s %%, MAR %s %%, NAB standard %s in %.1f s", path, metrics["f1"], metrics["far"],
             metrics["mar"], metrics["nab_standard"], time.monotonic() - t0)
    return metrics, results


def _records(experiments: Sequence[_Experiment]) -> Iterator[tuple[str, bytes]]:
    for e in experiments:
        for ts, row in zip(e.ts_ms.tolist(), e.values.tolist()):
            yield e.sensor, encode_reading(e.sensor, ts, row)


class _Collect(Stage):
    """Keeps every live scored window's score and threshold, per sensor."""

    def __init__(self) -> None:
        self.by_sensor: dict[str, dict[int, tuple[float, float]]] = {}

    def on_scored(self, scored: list[Scored]) -> list[Outgoing]:
        for s in scored:
            self.by_sensor.setdefault(s.window.sensor, {})[s.window.end_ms] = (s.score, s.threshold)
        return []


class _ListSource:
    def __init__(self, records: list[Record], batch: int) -> None:
        self.records, self.batch, self.at = records, batch, 0

    def poll(self, timeout_ms: int | None = None, max_records: int | None = None) -> list[Record]:
        out = self.records[self.at : self.at + self.batch]
        self.at += len(out)
        return out

    def commit(self, offsets: dict[Partition, int], metadata: dict[Partition, str] | None = None) -> bool:
        return True

    def close(self) -> None:
        return None


class _ListSink:
    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    def send(self, msg: Outgoing) -> None:
        self.sent.append(msg)

    def flush(self, timeout_s: float = 60.0) -> None:
        return None

    def close(self, timeout_s: float = 10.0) -> None:
        return None


class _OneModel:
    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle

    def current(self) -> str:
        return self.bundle.version

    def load(self, version: str | None = None, device: str = "cpu") -> ModelBundle:
        return self.bundle


def _in_process(experiments: Sequence[_Experiment], cfg: Config, bundle: ModelBundle
                ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[int, tuple[float, float]]]]:
    """The worker ``aestream run`` builds, fed the readings as records of one partition; its anomaly events."""
    topic = cfg.kafka.input_topics[0]
    records = [Record(topic, 0, i, sensor.encode(), value, 0)
               for i, (sensor, value) in enumerate(_records(experiments))]
    sink, collect = _ListSink(), _Collect()
    source = _ListSource(records, cfg.kafka.max_poll_records)
    app = build_app(cfg.replace(ops={"metrics_enabled": False}), source=source, sink=sink, models=_OneModel(bundle),
                    stages=[collect], model_check_interval_s=3600.0)
    app.worker.run(max_idle_s=0.0)
    events: dict[str, list[dict[str, Any]]] = {}
    for msg in sink.sent:
        if msg.topic == cfg.kafka.output_topic:
            doc = json.loads(msg.value)
            events.setdefault(doc["sensor"], []).append(doc)
    return events, collect.by_sensor


def _through_kafka(experiments: Sequence[_Experiment], cfg: Config, bundle: ModelBundle
                   ) -> dict[str, list[dict[str, Any]]]:
    """Publish, run ``aestream run`` as a subprocess with ``cfg``, read the output topic back."""
    from aestream.commands.demo import start_local_broker
    from aestream.kafka.kafka_python import ensure_topics, open_sink, tail_topic, wait_for_broker

    run = f"skab-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="aestream-skab-") as tmp:
        # the run reads this run's topic from its start, whatever the config's reset policy; it serves the model
        # published below from its directory; like the in-process worker it runs no alert, stream or retraining
        # stage (they would write SKAB's episodes to the config's real alert sinks and topics)
        cfg = cfg.replace(kafka={"input_topics": (f"{run}-readings",), "output_topic": f"{run}-anomalies",
                                 "dead_letter_topic": f"{run}-dead-letter", "group_id": run,
                                 "auto_offset_reset": "earliest"},
                          paths={"model_dir": str(Path(tmp) / "models"), "state_dir": str(Path(tmp) / "state")},
                          ops={"metrics_port": 0, "metrics_host": "127.0.0.1"},
                          fleet={"models": "directory", "retrain_in": "worker"}, retrain={"enabled": False},
                          alerts={"enabled": False}, streams={"denoised_topic": "", "latent_topic": ""})
        start_local_broker(cfg.kafka.bootstrap_servers[0], out=sys.stderr)  # stdout: --json's object alone
        wait_for_broker(cfg.kafka)
        k = cfg.kafka
        ensure_topics(k, {k.input_topics[0]: 4, k.output_topic: 1, k.dead_letter_topic: 1})
        ModelStore(cfg.paths.model_dir, key=cfg.fleet.model_key.encode() or None).publish(bundle)  # as the run checks
        sink = open_sink(k)
        n = 0
        for sensor, value in _records(experiments):
            sink.send(Outgoing(k.input_topics[0], value, sensor.encode()))
            n += 1
        sink.flush()
        sink.close()
        config = Path(tmp) / "config.toml"
        config.write_text(cfg.to_toml(), encoding="utf-8")
        log.info("published %d readings of %d sensors to %s; running aestream run", n, len(experiments),
                 k.input_topics[0])
        # to_toml leaves the secrets out: hand those read from the config file to the run by its environment
        env = {**os.environ, **{var: getattr(k, key) for key, var in SECRET_ENV.items() if getattr(k, key)}}
        proc = subprocess.run([sys.executable, "-m", "aestream", "--config", str(config), "--log-level", "WARNING",
                               "run", "--max-idle-s", "8"], capture_output=True, text=True, timeout=1800, env=env)
        if proc.returncode != 0:
            raise DataError(f"aestream run exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
        events: dict[str, list[dict[str, Any]]] = {}
        for doc in tail_topic(k, k.output_topic, timeout_s=120.0):
            events.setdefault(doc["sensor"], []).append(doc)
    return events


def _file_result(e: _Experiment, n_train: int, events: list[dict[str, Any]],
                 scored: dict[int, tuple[float, float]] | None) -> FileResult:
    test = e.frame.iloc[n_train:]
    ts = e.ts_ms[n_train:]
    alarmed = {int(ev["window_end_ms"]) for ev in events if ev.get("type", "anomaly") == "anomaly"}
    pred = np.fromiter((t in alarmed for t in ts.tolist()), dtype=np.int64, count=len(ts))
    if scored is not None:
        scores = np.array([scored.get(t, (np.nan, np.nan))[0] for t in ts.tolist()])
        thresholds = [scored[t][1] for t in ts.tolist() if t in scored]
    else:
        by_end = {int(ev["window_end_ms"]): float(ev["score"]) for ev in events}
        scores = np.array([by_end.get(t, np.nan) for t in ts.tolist()])
        thresholds = [float(ev["threshold"]) for ev in events]
    threshold = float(np.median(thresholds)) if thresholds else float("nan")
    return FileResult(e.sensor, test.index.to_numpy(dtype="datetime64[ns]"),
                      test["anomaly"].to_numpy(dtype=np.int64), test["changepoint"].to_numpy(dtype=np.int64),
                      scores, threshold, pred)


def skab_metrics(results: Sequence[FileResult], window_s: float = NAB_WINDOW_S) -> dict[str, Any]:
    """SKAB's metrics pooled over files: F1, FAR %, MAR %, NAB (3 profiles), mean detection delay, per-file rows."""
    total, matches, rows = Confusion(), list[ChangepointMatch](), list[dict[str, Any]]()
    for r in results:
        c = confusion(r.anomaly, r.pred)
        m = _match(r, window_s)
        total, matches = total + c, [*matches, m]
        f1, far, mar = binary_scores(c)
        rows.append({"name": r.name, "n_test": len(r.pred), "threshold": _round(r.threshold, 6), "tp": c.tp,
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


def write_predictions(results: Sequence[FileResult], out_dir: str | Path) -> None:
    """One CSV per file with columns ``datetime, anomaly, changepoint, pred``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for r in results:
        path = out / f"{r.name}.csv"  # a name of the SKAB root is "valve1/0": a folder per experiment group
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"datetime": r.times, "anomaly": r.anomaly, "changepoint": r.changepoint, "pred": r.pred}).to_csv(
            path, index=False)


def run_skab(path: str | Path, cfg: Config, **kwargs: Any) -> dict[str, Any]:
    """The CLI's entry: evaluate a SKAB folder (see :func:`evaluate_folder` for the options); the metrics dict."""
    metrics, _ = evaluate_folder(path, cfg, **kwargs)
    return metrics
