"""Size/error trade-off of the latent stream on SKAB's anomaly-free recording.

    python benchmarks/latent_compression.py ../shared/data/skab/anomaly-free/anomaly-free.csv

Trains the configured-family autoencoder (non-overlapping windows, stride = window size, so each latent record
encodes exactly the readings of its window) on the first 70 % of the file, then, on the last 30 %: bytes of the
latent records vs the raw readings as JSON messages, and each channel's RMSE of the decoded windows divided by the
channel's standard deviation. Prints a markdown table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import torch

from aestream.codec import encode_reading
from aestream.streams import encode_latent
from aestream.training import fit_scorer, sliding_windows

CHANNELS = ["Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature", "Thermocouple",
            "Voltage", "Volume Flow RateRMS"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", help="SKAB anomaly-free.csv")
    ap.add_argument("--family", default="vanilla")
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--latent", default="4,8,16,32", help="latent sizes to try")
    ap.add_argument("--epochs", type=int, default=80)
    args = ap.parse_args()
    torch.set_num_threads(2)
    df = pd.read_csv(args.csv, sep=";")
    x = df[CHANNELS].to_numpy(np.float64)
    ts = (pd.to_datetime(df["datetime"]).astype("int64") // 1_000_000).to_numpy()
    cut = int(0.7 * len(x))
    test = sliding_windows(x[cut:], args.window, args.window).astype(np.float64)
    ends = ts[cut + args.window - 1 :: args.window][: len(test)]
    raw_bytes = sum(len(encode_reading("skab-1", int(t), row.tolist())) for t, row in zip(ts[cut:], x[cut:])
                    if True)
    raw_bytes = raw_bytes * len(test) * args.window / (len(x) - cut)  # the readings the windows cover
    std = x[cut:].std(axis=0)
    rows = []
    for k in (int(v) for v in args.latent.split(",")):
        fit = fit_scorer([x[:cut]], CHANNELS, window_size=args.window, family=args.family, latent_size=k,
                         hidden_size=128, epochs=args.epochs, patience=15, device="cpu")
        codes = fit.scorer.encode(test)
        latent_bytes = sum(len(encode_latent("skab-1", int(e), "v0001", c)) for e, c in zip(ends, codes))
        decoded = fit.scorer.decode(codes.astype(np.float16).astype(np.float32))
        nrmse = np.sqrt(((decoded - test) ** 2).mean(axis=(0, 1))) / std
        rows.append({"latent_size": k, "ratio": round(raw_bytes / latent_bytes, 1),
                     "nrmse_max": round(float(nrmse.max()), 3), "nrmse_mean": round(float(nrmse.mean()), 3),
                     "nrmse": {c: round(float(v), 3) for c, v in zip(CHANNELS, nrmse)}})
    print(f"family {args.family}, window {args.window}, {len(test)} test windows\n")
    print("| latent size | bytes: raw / latent | per-channel NRMSE, max | mean |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['latent_size']} | {r['ratio']}× | {r['nrmse_max']} | {r['nrmse_mean']} |")
    print(json.dumps({"family": args.family, "window": args.window, "rows": rows}))


if __name__ == "__main__":
    main()
