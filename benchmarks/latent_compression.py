"""Size/error trade-off of the latent stream on SKAB's anomaly-free recording.

    python benchmarks/latent_compression.py ../shared/data/skab/anomaly-free/anomaly-free.csv [--threads 1]

Each autoencoder (``family:latent_size:hidden_size`` in ``--models``) is trained with
:func:`aestream.training.fit.fit_scorer` on the first 70 % of the file (its own time-ordered validation split, early
stopping, no detrending, no input smoothing), then judged on the last 30 %, cut into non-overlapping windows
(stride = window size, so each latent record encodes exactly the readings of its window):

* **Bytes.** Each window's latent record (:func:`aestream.outputs.streams.encode_latent`, float16 code) against
  (a) the readings it covers as the raw topic carries them, one JSON message each
  (:func:`aestream.stream.codec.encode_reading`) — the issue's measure — and (b) the same readings packed as float32
  in a
  record with the latent record's header (what that record would weigh carrying the readings instead of a code).
  Kafka's own per-record framing is left out of every count.
* **Error.** The window is decoded from the float16 code (:meth:`Scorer.decode`, as ``aestream decode`` does) and
  compared with the readings in their own units. **NRMSE** of a channel = its RMSE over all test windows and
  time steps divided by that channel's standard deviation over the same test readings (1.0 = no better than
  predicting the test slice's mean). ``range NRMSE`` divides the same RMSE by the channel's max − min over the
  test readings instead; it is a looser scale, shown for comparison only.

``pca`` rows are a reference, not an aestream family: principal components of the same standardised training
windows, the code stored as float16 like the latent record — the best *linear* code of that size.

**With the residual** (``streams.latent_residual_step_std``, ``AEL3`` records): for the models of latent size in
``--residual-sizes`` and each step in ``--steps`` (in training standard deviations of each channel), the records
are made by the worker's own :class:`~aestream.outputs.streams.StreamsStage` from float32 windows and decoded with
:func:`~aestream.outputs.streams.decode_window`, as ``aestream decode`` does; ``max err / step`` is the largest
``|decoded − reading| / step`` over every value (≤ 0.5 by construction). Two rows without any autoencoder show
what the autoencoder adds: the same residual coding against **the window mean** (a record with no code and each
channel's window mean as a float32 level) and against **the training mean** (no code, no levels: the residual's
per-channel median carries the window's level). A last table compares the Rice code of the residual with
stdlib codecs of the same integers (raw deflate and LZMA of zigzag int8 with a 16-bit escape, deflate of int16).

What bounds the error is printed first, per channel: Current, Pressure and Voltage are white noise at 1 Hz
(lag-1 autocorrelation ≈ 0), so no code much shorter than the window's readings of them brings their NRMSE well
below 1; and the Thermocouple drifts — its test readings lie above everything the training slice holds, with a
fifth of its training spread — so a code learnt on the training slice misses its level by several test stds.

Prints the per-channel table, the markdown trade-off tables, then one JSON line with every channel's NRMSE
(``acceptance_met_by`` lists the records that are ≥ 16× smaller than the JSON readings with every NRMSE ≤ 0.1).
About 2 min on one thread.
"""

from __future__ import annotations

import argparse
import json
import lzma
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from aestream.detect.scoring import Scorer
from aestream.models.bundle import ModelBundle
from aestream.outputs.streams import (
    StreamsStage,
    decode_latent,
    decode_window,
    encode_latent,
    quantise_residual,
    residual_steps,
)
from aestream.stream.codec import encode_reading
from aestream.stream.stages import Scored
from aestream.stream.windows import Window
from aestream.training.fit import fit_scorer, sliding_windows

CHANNELS = ["Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature", "Thermocouple",
            "Voltage", "Volume Flow RateRMS"]
SENSOR, VERSION = "skab-1", "v0001"
TRAIN_FRACTION = 0.7
DEFAULT_MODELS = ("vanilla:4:256,vanilla:8:256,vanilla:16:256,vanilla:32:256,vanilla:64:256,vanilla:128:256,"
                  "vanilla:256:512,conv:8:64,conv:64:64")
DEFAULT_PCA = "8,32,64,96,128,160,192,224,256"
DEFAULT_STEPS = "0.05,0.06,0.1"
DEFAULT_RESIDUAL_SIZES = "4,8,16,32"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", help="SKAB anomaly-free.csv")
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated family:latent_size:hidden_size")
    ap.add_argument("--pca", default=DEFAULT_PCA, help="latent sizes of the PCA reference ('' = none)")
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--patience", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", default=DEFAULT_STEPS, help="residual steps in training stds ('' = no residual rows)")
    ap.add_argument("--residual-sizes", default=DEFAULT_RESIDUAL_SIZES,
                    help="latent sizes of the models that also get residual rows")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    df = pd.read_csv(args.csv, sep=";")
    x = df[CHANNELS].to_numpy(np.float64)
    ts = (pd.to_datetime(df["datetime"]).astype("int64") // 1_000_000).to_numpy()
    cut = int(TRAIN_FRACTION * len(x))
    ev = _TestSlice.of(x[cut:], ts[cut:], args.window)
    steps = [float(v) for v in filter(None, args.steps.split(","))]
    residual_sizes = {int(v) for v in filter(None, args.residual_sizes.split(","))}
    rows, residual_rows, codec_rows = [], [], []
    for spec in filter(None, args.models.split(",")):
        family, k, hidden = spec.split(":")
        fit = fit_scorer([x[:cut]], CHANNELS, window_size=args.window, family=family, latent_size=int(k),
                         hidden_size=int(hidden), epochs=args.epochs, patience=args.patience, device="cpu")
        codes = fit.scorer.encode(ev.windows).astype(np.float16).astype(np.float32)  # what the record carries
        rows.append(ev.row(f"{family} h{hidden}", int(k), fit.scorer.decode(codes),
                           epochs_run=fit.metrics["epochs_run"], train_seconds=fit.metrics["train_seconds"]))
        if int(k) in residual_sizes:
            residual_rows += [ev.residual_row(f"{family} h{hidden}", fit.scorer, step) for step in steps]
    for k in (int(v) for v in filter(None, args.pca.split(","))):
        rows.append(ev.row("pca (reference)", k, _pca_decode(x[:cut], ev.windows, k)))
    train_std = x[:cut].std(axis=0)
    for step in steps:
        for name, recon, levels in [("window mean (no AE)", ev.windows.mean(axis=1, keepdims=True), True),
                                    ("training mean (no AE)", x[:cut].mean(axis=0), False)]:
            residual_rows.append(ev.baseline_row(name, recon, levels, train_std, step))
            codec_rows.append(ev.codec_row(name, recon, train_std, step))
    n_readings = ev.windows.shape[0] * ev.windows.shape[1]
    print(f"window {args.window}, {len(ev.windows)} test windows ({n_readings} readings), raw JSON "
          f"{ev.json_bytes / n_readings:.1f} B/reading, trained on {cut} readings\n")
    _print_channels(x[:cut], x[cut:])
    _print_table(rows)
    if residual_rows:
        print()
        _print_residual_table(residual_rows)
        print()
        _print_codec_table(codec_rows)
    met = [f"{r['code']}:{r['latent_size']}" + (f" step {r['step_std']}" if "step_std" in r else "")
           for r in rows + residual_rows if r["ratio_json"] >= 16 and r["nrmse_max"] <= 0.1]
    print(json.dumps({"window": args.window, "n_test_windows": len(ev.windows), "json_bytes": ev.json_bytes,
                      "float32_bytes": ev.float32_bytes, "acceptance_met_by": met,
                      "seconds": round(time.monotonic() - t0, 1), "rows": rows, "residual_rows": residual_rows,
                      "codec_rows": codec_rows}))


@dataclass(frozen=True)
class _TestSlice:
    """The non-overlapping test windows, their end times, the bytes of their readings, each channel's scales."""

    windows: np.ndarray
    ends_ms: np.ndarray
    json_bytes: int
    float32_bytes: int
    std: np.ndarray
    value_range: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, ts: np.ndarray, w: int) -> _TestSlice:
        windows = sliding_windows(x, w, w).astype(np.float64)
        x, ts = x[: len(windows) * w], ts[: len(windows) * w]  # the readings the windows cover
        json_bytes = sum(len(encode_reading(SENSOR, int(t), row.tolist())) for t, row in zip(ts, x))
        float32_bytes = len(windows) * (len(encode_latent(SENSOR, 0, VERSION, np.zeros(0))) + w * x.shape[1] * 4)
        return cls(windows, ts[w - 1 :: w], json_bytes, float32_bytes, x.std(axis=0), np.ptp(x, axis=0))

    def row(self, code: str, k: int, decoded: np.ndarray, records: list[bytes] | None = None,
            **extra: float) -> dict[str, Any]:
        """Bytes and errors of one code of ``k`` values, from its decoded windows (and its ``records``, when their
        size is not fixed by ``k``)."""
        if records is None:
            records = [encode_latent(SENSOR, int(e), VERSION, np.zeros(k)) for e in self.ends_ms]
        latent_bytes = sum(map(len, records))
        rmse = np.sqrt(((decoded - self.windows) ** 2).mean(axis=(0, 1)))
        nrmse = rmse / self.std
        return {"code": code, "latent_size": k, "bytes_per_window": latent_bytes // len(self.windows),
                "ratio_json": round(self.json_bytes / latent_bytes, 1),
                "ratio_float32": round(self.float32_bytes / latent_bytes, 2),
                "nrmse_max": round(float(nrmse.max()), 3), "worst": CHANNELS[int(nrmse.argmax())],
                "nrmse_mean": round(float(nrmse.mean()), 3), "n_channels_ok": int((nrmse <= 0.1).sum()),
                "range_nrmse_max": round(float((rmse / self.value_range).max()), 3),
                "nrmse": {c: round(float(v), 3) for c, v in zip(CHANNELS, nrmse)}, **extra}

    def residual_row(self, code: str, scorer: Scorer, step: float) -> dict[str, Any]:
        """AEL3 records as the worker writes them (float32 windows, StreamsStage), decoded as ``aestream decode``
        does."""
        bundle = ModelBundle(scorer, threshold=float("inf"), channels=tuple(CHANNELS), version=VERSION)
        stage = StreamsStage(lambda: bundle, tuple(CHANNELS), latent_topic="latent", latent_residual_step_std=step)
        w = self.windows.shape[1]
        scored = [Scored(Window(SENSOR, int(e) - 1000 * (w - 1), int(e), win.astype(np.float32)), 0.0, 1.0, False,
                         np.full(len(CHANNELS), 1 / len(CHANNELS)), VERSION) for e, win in zip(self.ends_ms,
                                                                                                self.windows)]
        records = [m.value for m in stage.on_scored(scored)]
        assert {r[:4] for r in records} == {b"AEL3"}, "a window went out without its residual"
        decoded = np.stack([decode_window(decode_latent(r), scorer) for r in records])
        return self._with_bound(self.row(code, scorer.model.latent_size, decoded, records),
                                decoded, residual_steps(step, scorer.preprocessor.std), step)

    def baseline_row(self, code: str, recon: np.ndarray, levels: bool, train_std: np.ndarray,
                     step: float) -> dict[str, Any]:
        """The same residual coding with no autoencoder: against the window mean (carried as float32 levels) or
        the training mean (known to the decoder, like a model's)."""
        steps = residual_steps(step, train_std)
        lv = recon[:, 0, :].astype(np.float32) if levels else None
        recon = np.broadcast_to(lv[:, None, :].astype(np.float64) if lv is not None else recon, self.windows.shape)
        q, fits = quantise_residual(self.windows.astype(np.float32), recon, steps)
        assert fits.all()
        records = [encode_latent(SENSOR, int(e), VERSION, np.zeros(0), None if lv is None else lv[i], q[i], step)
                   for i, e in enumerate(self.ends_ms)]
        decoded = recon + np.stack([decode_latent(r).residual for r in records]) * steps
        return self._with_bound(self.row(code, 0, decoded, records), decoded, steps, step)

    def codec_row(self, code: str, recon: np.ndarray, train_std: np.ndarray, step: float) -> dict[str, Any]:
        """Bytes per window of the same residual integers under the Rice code and under stdlib codecs."""
        q, _ = quantise_residual(self.windows.astype(np.float32), recon, residual_steps(step, train_std))
        head = len(encode_latent("", 0, "", np.zeros(0))) + 1 + 7  # m, then step_std, W and C
        rice = np.mean([len(encode_latent("", 0, "", np.zeros(0), residual=r, step_std=step)) - head for r in q])
        return {"code": code, "step_std": step, "rice": round(float(rice), 1),
                **{name: round(float(np.mean([len(f(r)) for r in q])), 1) for name, f in _CODECS.items()}}

    def _with_bound(self, row: dict[str, Any], decoded: np.ndarray, steps: np.ndarray,
                    step: float) -> dict[str, Any]:
        worst = float((np.abs(decoded - self.windows) / steps).max())
        return {**row, "step_std": step, "max_err_over_step": round(worst, 4)}


def _zigzag_int8(q: np.ndarray) -> bytes:
    """Channel by channel, zigzag int8 with 255 as an escape to a little-endian uint16 (a uint32 past that)."""
    z = ((q.T.ravel() << 1) ^ (q.T.ravel() >> 63)).astype(np.int64)
    small = np.minimum(z, 255).astype(np.uint8).tobytes()
    return small + b"".join(int(v).to_bytes(2 if v < 65536 else 4, "little") for v in z[z >= 255])


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: no zlib header or checksum
    return c.compress(data) + c.flush()


_CODECS = {
    "deflate int8+escape": lambda q: _deflate(_zigzag_int8(q)),
    "lzma int8+escape": lambda q: lzma.compress(_zigzag_int8(q), format=lzma.FORMAT_RAW,
                                               filters=[{"id": lzma.FILTER_LZMA2, "preset": 9}]),
    "deflate int16": lambda q: _deflate(q.T.astype("<i2").tobytes()),
}


def _print_channels(train: np.ndarray, test: np.ndarray) -> None:
    """What bounds the error: white-noise channels (no code much shorter than the window holds them) and test
    readings outside the training range (a code learnt on the training slice has not seen them)."""
    print("| channel | lag-1 autocorrelation (test) | test std / train std | test readings outside train range |")
    print("|---|---|---|---|")
    for i, c in enumerate(CHANNELS):
        ac = np.corrcoef(test[:-1, i], test[1:, i])[0, 1]
        outside = np.mean((test[:, i] < train[:, i].min()) | (test[:, i] > train[:, i].max()))
        print(f"| {c} | {ac:.2f} | {test[:, i].std() / train[:, i].std():.2f} | {100 * outside:.0f} % |")
    print()


def _markdown(columns: list[tuple[str, Callable[[dict[str, Any]], object]]], rows: list[dict[str, Any]]) -> None:
    """Print ``rows`` as a markdown table of ``(header, cell of a row)`` columns."""
    print("| " + " | ".join(h for h, _ in columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(str(cell(r)) for _, cell in columns) + " |")


_SIZE_ERROR: list[tuple[str, Callable[[dict[str, Any]], object]]] = [
    ("B/window", lambda r: r["bytes_per_window"]), ("vs JSON", lambda r: f"{r['ratio_json']}×"),
    ("vs float32", lambda r: f"{r['ratio_float32']}×"), ("NRMSE max", lambda r: r["nrmse_max"]),
    ("worst channel", lambda r: r["worst"]), ("NRMSE mean", lambda r: r["nrmse_mean"]),
    ("channels ≤ 0.1", lambda r: f"{r['n_channels_ok']}/{len(CHANNELS)}")]


def _print_table(rows: list[dict[str, Any]]) -> None:
    _markdown([("code", lambda r: r["code"]), ("latent size", lambda r: r["latent_size"]), *_SIZE_ERROR,
               ("range NRMSE max", lambda r: r["range_nrmse_max"])], rows)


def _print_residual_table(rows: list[dict[str, Any]]) -> None:
    _markdown([("predictor", lambda r: r["code"]), ("latent size", lambda r: r["latent_size"]),
               ("step (train stds)", lambda r: r["step_std"]), *_SIZE_ERROR,
               ("max err / step", lambda r: r["max_err_over_step"])], rows)


def _print_codec_table(rows: list[dict[str, Any]]) -> None:
    names = ["rice", *_CODECS]
    print("| residual of | step (train stds) | " + " | ".join(f"{n} B/window" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for r in rows:
        print(f"| {r['code']} | {r['step_std']} | " + " | ".join(str(r[n]) for n in names) + " |")


def _pca_decode(train: np.ndarray, test: np.ndarray, k: int) -> np.ndarray:
    """Test windows through the top-``k`` principal components of the standardised training windows
    (float16 codes)."""
    w = test.shape[1]
    mean, std = train.mean(axis=0), train.std(axis=0)
    flat = sliding_windows((train - mean) / std, w).astype(np.float64).reshape(-1, w * train.shape[1])
    centre = flat.mean(axis=0)
    basis = np.linalg.svd(flat - centre, full_matrices=False)[2][:k]
    codes = (((test - mean) / std).reshape(len(test), -1) - centre) @ basis.T
    codes = codes.astype(np.float16).astype(np.float64)
    return (codes @ basis + centre).reshape(test.shape) * std + mean


if __name__ == "__main__":
    main()
