"""What per-sensor baselines cost, per sensor and per window, in each mode, with the shipped model settings.

For ``shared`` and ``finetune``: the memory one sensor's baseline holds (tracemalloc over many sensors, torch
tensors counted by their storage), the CPU time of its calibration (the shared-model fit, or the fine-tune), and
the scoring throughput of a poll in which each of many sensors closes one window, against the shared model alone
(``off``) measured in the same run. Prints one JSON line.

    python benchmarks/baselines.py [--sensors 200] [--readings 400] [--family conv]
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import numpy as np
import torch

from aestream.commands.simulate import Plant
from aestream.config import Config
from aestream.detect.baselines import Baseline, SensorBaselines
from aestream.stream.windows import Windower
from aestream.training.build import train_bundle
from aestream.training.finetune import finetune_baseline


def _windows(cfg: Config, plant: Plant, steps: int) -> list:  # type: ignore[type-arg]
    s = cfg.stream
    win = Windower(s.window_size, s.stride, len(s.channels), s.max_gap_ms)
    return [w for sensor, ts, v in plant.readings(steps, 1_767_225_600_000) if (w := win.push(sensor, ts, v))]


def _model_bytes(b: Baseline) -> int:
    if b.scorer is None:
        return 0
    return sum(p.numel() * p.element_size() for p in b.scorer.model.state_dict().values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sensors", type=int, default=200)
    ap.add_argument("--readings", type=int, default=400)
    ap.add_argument("--family", default=Config().model.family, help="model family (default: the shipped one)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = Config().replace(model={"device": "cpu", "epochs": 20, "family": args.family},
                           baselines={"n_readings": args.readings})
    plant = Plant(args.sensors, cfg.stream.channels, seed=0)
    bundle = train_bundle(list(plant.signal(1200)[:8]), cfg.stream, cfg.model, cfg.threshold)
    bundle.version = "v0001"
    calib = _windows(cfg, plant, args.readings)
    out: dict[str, object] = {"sensors": args.sensors, "readings": args.readings, "family": cfg.model.family}

    # one window per sensor: the poll of a fleet reporting at 1 Hz
    first = _windows(cfg, plant, cfg.stream.window_size)
    live = np.stack([w.values for w in first])
    sensors = [w.sensor for w in first]  # the plant's own names (sensor-00, …), in the windows' order
    t0 = time.perf_counter()
    for _ in range(5):
        bundle.scorer.score(live)
    out["off_windows_per_s"] = round(5 * len(live) / (time.perf_counter() - t0))

    for mode in ("shared", "finetune"):
        c = cfg.replace(baselines={"mode": mode})
        base = SensorBaselines(c.baselines, c.threshold, c.stream.window_size, c.stream.stride)
        if mode == "finetune":
            base.finetune = lambda runs, shared, v, c=c: finetune_baseline(runs, shared, c, v)  # type: ignore[misc]
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        split = base.split(calib, bundle.scorer, bundle.version)
        seconds = time.perf_counter() - t0
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        n = len(split.finished)
        weights = sum(_model_bytes(b) for b in base.ready.values())
        t0 = time.perf_counter()
        for _ in range(5):
            base.score(live, sensors, bundle.scorer)
        out[mode] = {"calibrated": n, "calibration_ms_per_sensor": round(1000 * seconds / n, 2),
                     "bytes_per_sensor": round((held + weights) / n),
                     "windows_per_s": round(5 * len(live) / (time.perf_counter() - t0))}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
