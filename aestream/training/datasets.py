"""Reading training data files (CSV or Parquet, with pandas) into contiguous per-sensor segments."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from aestream.errors import AestreamError

__all__ = ["read_segments", "read_table", "ts_to_ms"]


def read_table(path: str | Path, sep: str | None = None) -> pd.DataFrame:
    """A CSV (separator sniffed unless given) or Parquet file as a DataFrame."""
    p = Path(path)
    if not p.is_file():
        raise AestreamError(f"data file {p} not found")
    if p.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(p)
    return pd.read_csv(p, sep=sep, engine="python" if sep is None else "c")


def read_segments(
    frame: pd.DataFrame,
    channels: Sequence[str],
    ts_column: str | None = "ts",
    sensor_column: str | None = "sensor",
    max_gap_ms: int | None = None,
) -> list[np.ndarray]:
    """Split readings into contiguous ``(T, C)`` segments: per sensor (if that column exists), in time order,
    cut wherever consecutive timestamps are more than ``max_gap_ms`` apart.

    >>> df = pd.DataFrame({"ts": [0, 1000, 2000, 60000], "a": [1.0, 2, 3, 4]})
    >>> [s.ravel().tolist() for s in read_segments(df, ["a"], max_gap_ms=5000)]
    [[1.0, 2.0, 3.0], [4.0]]
    """
    missing = [c for c in channels if c not in frame.columns]
    if missing:
        raise AestreamError(f"data lacks channel column(s) {missing}; it has {list(frame.columns)}: "
                            "rename them or set stream.channels")
    groups = frame.groupby(sensor_column, sort=True) if sensor_column in frame.columns else [(None, frame)]
    segments: list[np.ndarray] = []
    for _, g in groups:
        if ts_column in g.columns:
            ts = ts_to_ms(g[ts_column])
            order = np.argsort(ts, kind="stable")
            g, ts = g.iloc[order], ts[order]
            cuts = np.flatnonzero(np.diff(ts) > max_gap_ms) + 1 if max_gap_ms else np.array([], dtype=int)
        else:
            cuts = np.array([], dtype=int)
        values = g[list(channels)].to_numpy(dtype=np.float64)
        segments.extend(s for s in np.split(values, cuts) if len(s))
    return segments


def ts_to_ms(col: pd.Series) -> np.ndarray:
    """Epoch ms from a numeric (ms) or date-time column."""
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=np.int64)
    stamps = pd.to_datetime(col, utc=True)
    return ((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)).to_numpy(dtype=np.int64)
