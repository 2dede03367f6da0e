"""Scoring throughput per model family: windows/s of ``Scorer.score`` on one thread; the last line is one JSON object.

    python benchmarks/scoring.py [--window 32] [--batch 256] [--rounds 5] [--device cpu|cuda]

Each family is built with the shipped config.toml's ``[model]`` settings (its channels, detrended channels, input
smoothing and family parameters) and untrained weights: the cost does not depend on their values. A call scores a
batch of raw float32 windows, as the worker hands them over (preprocessing, reconstruction, channel errors, shares).
The families take turns, ``--rounds`` times, and each figure is the median of its rounds. On a CPU the time is the
scoring thread's own CPU time (``time.thread_time``): other processes on a shared machine then cost it little,
and on an idle one it is the wall time. On CUDA it is the wall time. ``throughput.py`` runs the same code.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from aestream.config import ModelConfig, load_config
from aestream.detect.features import Preprocessor
from aestream.detect.scoring import Scorer
from aestream.models import FAMILIES, build_model

ROOT = Path(__file__).resolve().parents[1]


def scorers(window_size: int, device: str = "cpu", model: ModelConfig | None = None,
            channels: tuple[str, ...] | None = None) -> dict[str, Scorer]:
    """One scorer per family with ``model``'s settings (default: the shipped config.toml's)."""
    cfg = load_config(ROOT / "config.toml")
    model = model or cfg.model
    channels = channels or cfg.stream.channels
    rng = np.random.default_rng(0)
    detrend = [c for c in model.detrend_channels if c in channels]
    pre = Preprocessor.fit(rng.normal(size=(1000, len(channels))), channels, detrend, model.input_smoothing)
    out = {}
    for family in sorted(FAMILIES):
        torch.manual_seed(0)
        params = dict(getattr(model, family))  # the family's own sub-table
        net = build_model(family, window_size=window_size, n_channels=len(channels), latent_size=model.latent_size,
                          hidden_size=model.hidden_size, **params)
        out[family] = Scorer(net, pre, score_reduce=model.score_reduce, device=device)
    return out


def rates(scorers: dict[str, Scorer], batch: int = 256, rounds: int = 5, seconds: float = 0.3) -> dict[str, float]:
    """Median windows/s of each scorer over ``rounds`` turns of ``seconds`` each, the scorers taking turns."""
    some = next(iter(scorers.values()))
    shape = (batch, some.model.window_size, some.model.n_channels)
    windows = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    clock = time.thread_time if some.device.type == "cpu" else time.perf_counter
    got: dict[str, list[float]] = {name: [] for name in scorers}
    for s in scorers.values():  # warm-up: first calls allocate, CUDA loads its kernels
        for _ in range(3):
            s.score(windows)
    for _ in range(rounds):
        for name, s in scorers.items():
            t0, n = clock(), 0
            while clock() - t0 < seconds:
                s.score(windows)
                n += 1
            got[name].append(n * batch / (clock() - t0))
    return {name: float(np.median(r)) for name, r in got.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    got = rates(scorers(args.window, args.device), args.batch, args.rounds)
    print(json.dumps({"scoring_windows_per_s": {k: round(v) for k, v in got.items()}, "window_size": args.window,
                      "batch": args.batch, "threads": torch.get_num_threads(), "device": args.device,
                      "python": sys.version.split()[0], "torch": torch.__version__}))


if __name__ == "__main__":
    main()
