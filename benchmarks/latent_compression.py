"""Size/error trade-off of the latent stream on SKAB's anomaly-free recording.

    python benchmarks/latent_compression.py ../shared/data/skab/anomaly-free/anomaly-free.csv [--threads 1]

Each autoencoder (``family:latent_size:hidden_size`` in ``--models``) is trained with
:func:`aestream.training.fit_scorer` on the first 70 % of the file (its own time-ordered validation split, early
stopping, no detrending, no input smoothing), then judged on the last 30 %, cut into non-overlapping windows
(stride = window size, so each latent record encodes exactly the readings of its window):

* **Bytes.** Each window's latent record (:func:`aestream.streams.encode_latent`, float16 code) against
  (a) the readings it covers as the raw topic carries them, one JSON message each
  (:func:`aestream.codec.encode_reading`) — the issue's measure — and (b) the same readings packed as float32 in a
  record with the latent record's header (what that record would weigh carrying the readings instead of a code).
  Kafka's own per-record framing is left out of every count.
* **Error.** The window is decoded from the float16 code (:meth:`Scorer.decode`, as ``aestream decode`` does) and
  compared with the readings in their own units. **NRMSE** of a channel = its RMSE over all test windows and
  time steps divided by that channel's standard deviation over the same test readings (1.0 = no better than
  predicting the test slice's mean). ``range NRMSE`` divides the same RMSE by the channel's max − min over the
  test readings instead; it is a looser scale, shown for comparison only.

``pca`` rows are a reference, not an aestream family: principal components of the same standardised training
windows, the code stored as float16 like the latent record — the best *linear* code of that size.

What bounds the error is printed first, per channel: Current, Pressure and Voltage are white noise at 1 Hz
(lag-1 autocorrelation ≈ 0), so no code much shorter than the window's readings of them brings their NRMSE well
below 1; and the Thermocouple drifts — its test readings lie above everything the training slice holds, with a
fifth of its training spread — so a code learnt on the training slice misses its level by several test stds.

Prints the per-channel table, the markdown trade-off table, then one JSON line with every channel's NRMSE
(``acceptance_met_by`` lists the codes that are ≥ 16× smaller than the JSON readings with every NRMSE ≤ 0.1).
About 4 min on one thread.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from aestream.codec import encode_reading
from aestream.streams import encode_latent
from aestream.training import fit_scorer, sliding_windows

CHANNELS = ["Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature", "Thermocouple",
            "Voltage", "Volume Flow RateRMS"]
SENSOR, VERSION = "skab-1", "v0001"
TRAIN_FRACTION = 0.7
DEFAULT_MODELS = ("vanilla:4:256,vanilla:8:256,vanilla:16:256,vanilla:32:256,vanilla:64:256,vanilla:128:256,"
                  "vanilla:256:512,conv:8:64,conv:64:64")
DEFAULT_PCA = "8,32,64,96,128,160,192,224,256"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", help="SKAB anomaly-free.csv")
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated family:latent_size:hidden_size")
    ap.add_argument("--pca", default=DEFAULT_PCA, help="latent sizes of the PCA reference ('' = none)")
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--patience", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    df = pd.read_csv(args.csv, sep=";")
    x = df[CHANNELS].to_numpy(np.float64)
    ts = (pd.to_datetime(df["datetime"]).astype("int64") // 1_000_000).to_numpy()
    cut = int(TRAIN_FRACTION * len(x))
    ev = _TestSlice.of(x[cut:], ts[cut:], args.window)
    rows = []
    for spec in filter(None, args.models.split(",")):
        family, k, hidden = spec.split(":")
        fit = fit_scorer([x[:cut]], CHANNELS, window_size=args.window, family=family, latent_size=int(k),
                         hidden_size=int(hidden), epochs=args.epochs, patience=args.patience, device="cpu")
        codes = fit.scorer.encode(ev.windows).astype(np.float16).astype(np.float32)  # what the record carries
        rows.append(ev.row(f"{family} h{hidden}", int(k), fit.scorer.decode(codes),
                           epochs_run=fit.metrics["epochs_run"], train_seconds=fit.metrics["train_seconds"]))
    for k in (int(v) for v in filter(None, args.pca.split(","))):
        rows.append(ev.row("pca (reference)", k, _pca_decode(x[:cut], ev.windows, k)))
    n_readings = ev.windows.shape[0] * ev.windows.shape[1]
    print(f"window {args.window}, {len(ev.windows)} test windows ({n_readings} readings), raw JSON "
          f"{ev.json_bytes / n_readings:.1f} B/reading, trained on {cut} readings\n")
    _print_channels(x[:cut], x[cut:])
    _print_table(rows)
    met = [f"{r['code']}:{r['latent_size']}" for r in rows if r["ratio_json"] >= 16 and r["nrmse_max"] <= 0.1]
    print(json.dumps({"window": args.window, "n_test_windows": len(ev.windows), "json_bytes": ev.json_bytes,
                      "float32_bytes": ev.float32_bytes, "acceptance_met_by": met,
                      "seconds": round(time.monotonic() - t0, 1), "rows": rows}))


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

    def row(self, code: str, k: int, decoded: np.ndarray, **extra: float) -> dict[str, Any]:
        """Bytes and errors of one code of ``k`` values, from its decoded windows."""
        latent_bytes = sum(len(encode_latent(SENSOR, int(e), VERSION, np.zeros(k))) for e in self.ends_ms)
        rmse = np.sqrt(((decoded - self.windows) ** 2).mean(axis=(0, 1)))
        nrmse = rmse / self.std
        return {"code": code, "latent_size": k, "bytes_per_window": latent_bytes // len(self.windows),
                "ratio_json": round(self.json_bytes / latent_bytes, 1),
                "ratio_float32": round(self.float32_bytes / latent_bytes, 2),
                "nrmse_max": round(float(nrmse.max()), 3), "worst": CHANNELS[int(nrmse.argmax())],
                "nrmse_mean": round(float(nrmse.mean()), 3), "n_channels_ok": int((nrmse <= 0.1).sum()),
                "range_nrmse_max": round(float((rmse / self.value_range).max()), 3),
                "nrmse": {c: round(float(v), 3) for c, v in zip(CHANNELS, nrmse)}, **extra}


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


def _print_table(rows: list[dict[str, Any]]) -> None:
    print("| code | latent size | B/window | vs JSON | vs float32 | NRMSE max | worst channel | NRMSE mean "
          "| channels ≤ 0.1 | range NRMSE max |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['code']} | {r['latent_size']} | {r['bytes_per_window']} | {r['ratio_json']}× "
              f"| {r['ratio_float32']}× | {r['nrmse_max']} | {r['worst']} | {r['nrmse_mean']} "
              f"| {r['n_channels_ok']}/{len(CHANNELS)} | {r['range_nrmse_max']} |")


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
