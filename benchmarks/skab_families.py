"""SKAB results of every autoencoder family with the recommended settings, plus the all-positive baseline.

    python benchmarks/skab_families.py /path/to/skab/valve1 [--threads 1]

Prints a markdown table (F1 / FAR % / MAR % / NAB standard / mean delay / seconds). Each family runs through the
worker's own path (fit_scorer → Scorer → calibrated threshold → AlarmRule); see aestream.commands.evaluate.skab.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time

import numpy as np
import torch

from aestream.commands.evaluate.skab import FileResult, evaluate_folder, list_skab_files, load_skab_file, skab_metrics
from aestream.config import ModelConfig, ThresholdConfig

WINDOW_SIZE = 40
INPUT_SMOOTHING = 5
MODEL = ModelConfig(family="conv", latent_size=8, hidden_size=64, epochs=60, learning_rate=1e-3, seed=0,
                    validation_fraction=0.3, device="cpu", detrend_channels=("Temperature", "Thermocouple"),
                    score_reduce="mean")
THRESHOLD = ThresholdConfig(method="quantile", quantile=0.999, factor=2.5, smoothing=1, k=1, n=20)
FAMILIES = ("vanilla", "sparse", "contractive", "denoising", "conv")


def all_positive(folder: str, n_train: int = 400) -> dict:
    """Metrics of the detector that flags every test point."""
    results = []
    for f in list_skab_files(folder):
        test = load_skab_file(f).iloc[n_train:]
        results.append(FileResult(f.stem, test.index.to_numpy(dtype="datetime64[ns]"),
                                  test["anomaly"].to_numpy(dtype=np.int64),
                                  test["changepoint"].to_numpy(dtype=np.int64), np.zeros(len(test)), 0.0,
                                  np.ones(len(test), dtype=np.int64)))
    return skab_metrics(results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="a SKAB folder of experiment CSVs, e.g. data/skab/valve1")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: the models are tiny; 2 threads on a busy 2-core host thrash)")
    ap.add_argument("--families", nargs="*", default=list(FAMILIES))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    rows = []
    for family in args.families:
        t0 = time.monotonic()
        model = dataclasses.replace(MODEL, family=family, torch_threads=args.threads)
        m, _ = evaluate_folder(args.folder, model, THRESHOLD, WINDOW_SIZE, input_smoothing=INPUT_SMOOTHING)
        rows.append((family, m, time.monotonic() - t0))
    rows.append(("all-positive baseline", all_positive(args.folder), 0.0))
    print(f"SKAB {args.folder}: window_size={WINDOW_SIZE}, input_smoothing={INPUT_SMOOTHING}, {MODEL.score_reduce} "
          f"score, threshold {THRESHOLD.factor} × q{THRESHOLD.quantile}, k={THRESHOLD.k} of n={THRESHOLD.n}\n")
    print("| detector | F1 | FAR % | MAR % | NAB standard | NAB lowFP | NAB lowFN | mean delay s | time s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, m, secs in rows:
        print(f"| {name} | {m['f1']:.3f} | {m['far']:.2f} | {m['mar']:.2f} | {m['nab_standard']:.2f} | "
              f"{m['nab_lowfp']:.2f} | {m['nab_lowfn']:.2f} | {m['mean_delay_s']} | {secs:.0f} |")


if __name__ == "__main__":
    main()
