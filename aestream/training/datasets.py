"""Reading training data files (CSV or Parquet, with pandas) into contiguous per-sensor segments."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from aestream.errors import AestreamError, DataError, first_line

__all__ = ["channel_values", "read_segments", "read_table", "sensor_segments", "ts_to_ms"]


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
    return [v for _, v, _ in sensor_segments(frame, channels, ts_column, sensor_column, max_gap_ms) if len(v)]


def sensor_segments(
    frame: pd.DataFrame,
    channels: Sequence[str],
    ts_column: str | None = "ts",
    sensor_column: str | None = "sensor",
    max_gap_ms: int | None = None,
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(sensor, values (T, C), ts_ms (T,))`` of each contiguous segment, as the worker reads them: per sensor (by
    its id; ``""`` without that column), in time order, a repeated time's first reading alone (the worker drops the
    others as late), cut where readings are more than ``max_gap_ms`` apart. Without a ``ts_column`` the row index
    is the time and nothing is cut. A row without a sensor id is a :class:`DataError` (grouping would drop it).

    >>> df = pd.DataFrame({"ts": [0, 1000, 1000, 60000], "a": [1.0, 2, 9, 4]})
    >>> [(s, v.ravel().tolist(), t.tolist()) for s, v, t in sensor_segments(df, ["a"], max_gap_ms=5000)]
    [('', [1.0, 2.0], [0, 1000]), ('', [4.0], [60000])]
    """
    if sensor_column in frame.columns and frame[sensor_column].isna().any():
        at = frame.index[int(frame[sensor_column].isna().argmax())]
        raise DataError(f"data column {sensor_column!r} is empty at row {at} (from 0, after the header): fill or drop "
                        "that row")
    groups = frame.groupby(sensor_column, sort=True) if sensor_column in frame.columns else [("", frame)]
    for sensor, g in groups:
        if ts_column in g.columns:
            ts = ts_to_ms(g[ts_column])
            order = np.argsort(ts, kind="stable")
            g, ts = g.iloc[order], ts[order]
            first = np.diff(ts, prepend=ts[:1] - 1) > 0
            g, ts = g.iloc[first], ts[first]
            cuts = np.flatnonzero(np.diff(ts) > max_gap_ms) + 1 if max_gap_ms else np.array([], dtype=int)
        else:
            ts, cuts = np.arange(len(g), dtype=np.int64), np.array([], dtype=int)
        values = channel_values(g, channels)  # a cell that is no finite number: the error names it
        for seg_values, seg_ts in zip(np.split(values, cuts), np.split(ts, cuts)):
            yield str(sensor), seg_values, seg_ts


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
    # ISO 8601 each stamp by itself: one format inferred from the first would refuse '...T00:00:01' beside
    # '...T00:00:01.250000' (datetime.isoformat() drops a zero fraction), as the worker's codec does not
    stamps = pd.to_datetime(col, utc=True, errors="coerce", format="ISO8601")
    if stamps.isna().any():  # not ISO 8601 throughout: the format pandas infers from the first (e.g. 1/2/2026 10:00)
        inferred = pd.to_datetime(col, utc=True, errors="coerce")
        stamps = inferred if inferred.isna().sum() < stamps.isna().sum() else stamps
    if stamps.isna().any():
        at = int(stamps.isna().argmax())
        raise DataError(f"data column {col.name!r} holds {col.iloc[at]!r} at row {col.index[at]} (from 0, after the "
                        "header): not a timestamp; use epoch milliseconds or ISO 8601 (2026-01-01T00:00:00Z)")
    return ((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)).to_numpy(dtype=np.int64)
