"""Small synthetic SKAB-format experiments and a config for them (the benchmark's own data is not needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from aestream.config import Config

CFG = Config().replace(
    stream={"channels": ("flow", "pressure", "temp"), "window_size": 16},
    model={"family": "vanilla", "epochs": 15, "latent_size": 4, "hidden_size": 32, "device": "cpu",
           "detrend_channels": ("temp",), "input_smoothing": 1},
    threshold={"quantile": 0.99, "factor": 1.5, "k": 1, "n": 5},
)


def write_experiment(path: Path, seed: int, level: float = 0.0) -> None:
    """560 rows at 1 Hz; a level shift of ``flow`` on rows 450-509 is the anomaly. ``level`` moves the sensor's
    operating point (what per-sensor baselines are for)."""
    rng = np.random.default_rng(seed)
    n = 560
    t = np.arange(n)
    frame = pd.DataFrame({
        "datetime": pd.date_range("2020-03-09 10:00:00", periods=n, freq="s").strftime("%Y-%m-%d %H:%M:%S"),
        "flow": level + np.sin(t / 7) + 0.1 * rng.standard_normal(n),
        "pressure": 3 * level + np.cos(t / 5) + 0.1 * rng.standard_normal(n),
        "temp": 20 + t / 100 + 0.05 * rng.standard_normal(n),
        "anomaly": 0.0,
        "changepoint": 0.0,
    })
    frame.loc[450:509, "flow"] += 4.0
    frame.loc[450:509, "anomaly"] = 1.0
    frame.loc[[450, 510], "changepoint"] = 1.0
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, sep=";", index=False)
