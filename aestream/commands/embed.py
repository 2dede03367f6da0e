"""Offline latent codes: window a table of readings as the worker does and encode every window."""

from __future__ import annotations

import numpy as np
import pandas as pd

from aestream.config import StreamConfig
from aestream.errors import AestreamError
from aestream.models.bundle import ModelBundle
from aestream.training.datasets import sensor_segments
from aestream.training.fit import sliding_windows

__all__ = ["embed_frame"]


def embed_frame(frame: pd.DataFrame, bundle: ModelBundle, stride: int, ts_column: str = "ts",
                sensor_column: str = "sensor", stride_ms: int = 0,
                max_gap_ms: int | None = StreamConfig.max_gap_ms) -> pd.DataFrame:
    """One row per window: ``sensor``, ``window_end_ms`` (or the row index without a ts column),
    ``model_version``, the latent code as ``z0 … z{k-1}`` and, when the model detrends channels, each one's
    window level as ``level_<channel>`` (``scorer.decode(z, levels)`` gives the window back). Windows end every
    ``stride`` rows, or, with ``stride_ms``, at the first reading of each new ``stride_ms`` cell of the epoch
    grid (as the worker). Readings of a sensor more than ``max_gap_ms`` apart (``stream.max_gap_ms``; ``None``: no
    limit) start its windows afresh, as in the worker and in training (``sensor_segments``): no window spans a gap."""
    channels = list(bundle.channels)
    missing = [c for c in channels if c not in frame.columns]
    if missing:
        raise AestreamError(f"data lacks channel column(s) {missing}; the model {bundle.version} needs {channels}")
    w = bundle.window_size
    level_columns = [f"level_{c}" for c, d in zip(channels, bundle.scorer.preprocessor.detrend) if d]
    parts = []
    for sensor, seg_values, seg_ts in sensor_segments(frame, channels, ts_column, sensor_column, max_gap_ms):
        windows, ends = _windows(seg_values, seg_ts, w, stride, stride_ms)
        if not len(windows):
            continue
        codes = bundle.scorer.encode(windows)
        part = pd.DataFrame(codes, columns=[f"z{i}" for i in range(codes.shape[1])])
        part[level_columns] = bundle.scorer.levels(windows)
        part.insert(0, "model_version", bundle.version)
        part.insert(0, "window_end_ms", ends)
        part.insert(0, "sensor", sensor)
        parts.append(part)
    if not parts:
        raise AestreamError(f"no sensor in the file has a full window of {w} readings")
    return pd.concat(parts, ignore_index=True)


def _windows(values: np.ndarray, ts: np.ndarray, w: int, stride: int,
             stride_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """The windows of one gap-free run of a sensor's readings and the time each ends at, as the worker closes them
    (:class:`~aestream.stream.windows.Windower`: the first full window, then every ``stride`` readings or at each
    new ``stride_ms`` cell)."""
    windows = sliding_windows(values, w, 1 if stride_ms else stride)
    ends = ts[w - 1 :: 1 if stride_ms else stride][: len(windows)]
    if stride_ms and len(windows):
        due = ts[w - 1 :] // stride_ms != ts[w - 2 : -1] // stride_ms
        due[0] = True  # the first full window closes whatever the grid, as in the worker (Windower.push)
        windows, ends = windows[due], ends[due]
    return windows, ends
