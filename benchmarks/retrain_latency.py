"""Scoring latency with and without a concurrent retrain; prints one JSON line.

    python benchmarks/retrain_latency.py [--isolation process|thread] [--seconds 8] [--batch 256]

A small model (the configured family, trained here) scores batches of windows from a simulated plant in the main
thread, as the worker does, first alone for ``--seconds``, then while a :class:`~aestream.retrain.retrainer.Retrainer`
retrains from a reservoir of windows. The target is p99 with a retrain ≤ 2 × p99 without.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from aestream.commands.simulate import Plant
from aestream.config import Config
from aestream.detect.thresholds import AlarmRule
from aestream.models.store import ModelStore
from aestream.retrain.reservoir import Reservoir
from aestream.retrain.retrainer import Retrainer, RetrainOutcome
from aestream.training.build import train_bundle
from aestream.training.fit import sliding_windows

CHANNELS = ("temperature", "pressure", "vibration", "current")


def _latencies(score: Callable[[], None], until: Callable[[], bool]) -> list[float]:
    out = []
    while not until():
        t = time.perf_counter()
        score()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isolation", choices=["process", "thread"], default="process")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of the baseline run")
    ap.add_argument("--batch", type=int, default=256, help="windows per scored batch")
    ap.add_argument("--family", default="conv")
    ap.add_argument("--epochs", type=int, default=15, help="epochs of the concurrent retrain")
    args = ap.parse_args()
    torch.set_num_threads(1)  # a worker with bounded torch threads
    scratch = tempfile.TemporaryDirectory(prefix="aestream-bench-")  # removed at exit, even on an error
    tmp = Path(scratch.name)
    cfg = Config().replace(
        stream={"channels": CHANNELS, "window_size": 32, "stride": 4},
        model={"family": args.family, "epochs": 5, "device": "cpu", "torch_threads": 1,
               "detrend_channels": ()},  # the shipped ones are SKAB's, not these
        retrain={"enabled": True, "isolation": args.isolation, "torch_threads": 1, "epochs": args.epochs,
                 "n_min_windows": 100, "gate_tolerance": 1e9, "gate_max_far": 0.99},
        paths={"model_dir": str(tmp / "models"), "state_dir": str(tmp / "state")},
    )
    plant = Plant(8, CHANNELS, seed=0)
    segments = plant.signal(1200)
    store = ModelStore(cfg.paths.model_dir)
    store.publish(train_bundle(list(segments[:, :600]), cfg.stream, cfg.model, cfg.threshold))
    bundle = store.load()
    reservoir = Reservoir(20_000, 32, 4, half_life_s=1e6, max_age_s=1e9)
    for i, series in enumerate(segments):
        for j, w in enumerate(sliding_windows(series, 32, 1)):
            reservoir.add(plant.sensors[i], j * 1000, w)
    windows = np.concatenate([sliding_windows(s[600:], 32, 4) for s in segments])
    rng = np.random.default_rng(0)
    rule = AlarmRule(bundle.threshold, k=2, n=3)

    def score() -> None:
        batch = windows[rng.integers(0, len(windows), args.batch)]
        scores = bundle.scorer.score(batch).scores
        for k, s in enumerate(scores):
            rule.update(f"s{k % 8}", float(s))

    for _ in range(20):
        score()  # warm-up
    end = time.monotonic() + args.seconds
    idle = _latencies(score, lambda: time.monotonic() > end)
    done = threading.Event()
    outcomes: list[RetrainOutcome] = []

    def retrain() -> None:
        outcomes.append(Retrainer(cfg, reservoir, store).run_once(force=True))
        done.set()

    threading.Thread(target=retrain, daemon=True).start()
    busy = _latencies(score, done.is_set)
    outcome = outcomes[0]
    p_idle, p_busy = float(np.percentile(idle, 99)) * 1e3, float(np.percentile(busy, 99)) * 1e3
    print(json.dumps({
        "isolation": args.isolation, "family": args.family, "batch": args.batch,
        "p99_ms_without_retrain": round(p_idle, 3), "p99_ms_with_retrain": round(p_busy, 3),
        "ratio": round(p_busy / p_idle, 3), "target_ratio": 2.0,
        "p50_ms_without_retrain": round(float(np.median(idle)) * 1e3, 3),
        "p50_ms_with_retrain": round(float(np.median(busy)) * 1e3, 3),
        "n_batches": [len(idle), len(busy)], "retrain_status": outcome.status, "retrain_s": outcome.seconds,
        "n_reservoir_windows": len(reservoir), "cpu_count": os.cpu_count(),
    }))
    scratch.cleanup()


if __name__ == "__main__":
    main()
