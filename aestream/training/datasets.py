"""Reading training data files (CSV or Parquet, with pandas) into contiguous per-sensor segments."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from aestream.errors import AestreamError, DataError, first_line

__all__ = ["channel_values", "read_segments", "read_table", "ts_to_ms"]


def read_table(path: str | Path, sep: str | None = None) -> pd.DataFrame:
    """A CSV (separator sniffed unless given) or Parquet file as a DataFrame."""
    p = Path(path)
    if not p.is_file():
        raise AestreamError(f"data file {p} not found")
    parquet = p.suffix.lower() in (".parquet", ".pq")
    try:
        if parquet:
            return pd.read_parquet(p)
        return pd.read_csv(p, sep=sep or _separator(p), engine="c")
    except (ValueError, OSError) as e:  # pandas' and pyarrow's parse errors are ValueErrors
        kind = "Parquet" if parquet else "CSV" + ("" if sep is None else f" separated by {sep!r}")
        why = first_line(e, "empty")
        raise DataError(f"data file {p} cannot be read as {kind} ({type(e).__name__}: {why}): give a "
                        + ("Parquet file" if parquet else "CSV file with a header row (--sep: one character, or "
                           "leave it out to detect it)")) from None


def _separator(path: Path) -> str:
    """The separator of a CSV file's first lines among ``,;\\t|`` (a comma when they hold none: one column).
    pandas' own sniffing would take a letter of a one-column header for the separator.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     files = {"one": "temp\\n1.5\\n", "semi": "datetime;a b;c\\n2020-01-01 00:00:00;1,5;2\\n"}
    ...     for name, text in files.items():
    ...         _ = (Path(d) / name).write_text(text)
    ...     [_separator(Path(d) / name) for name in files]
    [',', ';']
    """
    with path.open(newline="", errors="replace") as f:
        sample = "".join(f.readline() for _ in range(5))
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


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
        segments.extend(s for s in np.split(channel_values(g, channels), cuts) if len(s))
    return segments


def channel_values(frame: pd.DataFrame, channels: Sequence[str]) -> np.ndarray:
    """The channels' readings as ``(T, C)`` float64; a cell that is no finite number is a :class:`DataError`
    naming its column, row and value (a NaN would otherwise end training as a diverged loss).

    >>> channel_values(pd.DataFrame({"a": [1.0, None]}), ["a"])
    Traceback (most recent call last):
    aestream.errors.DataError: data column 'a' is empty at row 1 (from 0, after the header): fill or drop that row
    """
    numbers = frame[list(channels)].apply(pd.to_numeric, errors="coerce")
    values = numbers.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        cell = frame[channels[c]].iloc[r]
        what = "is empty" if pd.isna(cell) else f"holds {cell!r}, not a finite number,"
        raise DataError(f"data column {channels[c]!r} {what} at row {frame.index[r]} (from 0, after the header): "
                        "fill or drop that row")
    return values


def ts_to_ms(col: pd.Series) -> np.ndarray:
    """Epoch ms from a numeric (ms) or date-time column."""
    if pd.api.types.is_numeric_dtype(col):
        if col.isna().any():
            raise DataError(f"data column {col.name!r} is empty at row {col.index[col.isna().argmax()]} (from 0, "
                            "after the header): fill or drop that row")
        return col.to_numpy(dtype=np.int64)
    stamps = pd.to_datetime(col, utc=True, errors="coerce")
    if stamps.isna().any():
        at = int(stamps.isna().argmax())
        raise DataError(f"data column {col.name!r} holds {col.iloc[at]!r} at row {col.index[at]} (from 0, after the "
                        "header): not a timestamp; use epoch milliseconds or ISO 8601 (2026-01-01T00:00:00Z)")
    return ((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)).to_numpy(dtype=np.int64)
