"""SKAB results of every autoencoder family with the shipped settings, plus the all-positive baseline.

    python benchmarks/skab_families.py /path/to/skab [--threads 1] [--config config.toml]

Prints a markdown table (F1 / FAR % / MAR % / NAB standard / mean delay / seconds). Each family runs through the
daemon's own detector in process (``aestream evaluate skab``: the worker with per-sensor baselines).
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch

from aestream.commands.evaluate.skab import FileResult, evaluate_folder, list_skab_files, load_skab_file, skab_metrics
from aestream.config import load_config

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
    ap.add_argument("--config", default="config.toml", help="the config (default: the shipped config.toml)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config).replace(model={"device": "cpu", "torch_threads": args.threads})
    rows = []
    for family in args.families:
        t0 = time.monotonic()
        m, _ = evaluate_folder(args.folder, cfg.replace(model={"family": family}))
        rows.append((family, m, time.monotonic() - t0))
    rows.append(("all-positive baseline", all_positive(args.folder), 0.0))
    t, s = cfg.threshold, cfg.stream
    print(f"SKAB {args.folder}: window_size={s.window_size}, baselines {cfg.baselines.mode}, threshold {t.factor} × "
          f"q{t.quantile}, k={t.k} of n={t.n}\n")
    print("| detector | F1 | FAR % | MAR % | NAB standard | NAB lowFP | NAB lowFN | mean delay s | time s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, m, secs in rows:
        print(f"| {name} | {m['f1']:.3f} | {m['far']:.2f} | {m['mar']:.2f} | {m['nab_standard']:.2f} | "
              f"{m['nab_lowfp']:.2f} | {m['nab_lowfn']:.2f} | {m['mean_delay_s']} | {secs:.0f} |")


if __name__ == "__main__":
    main()
