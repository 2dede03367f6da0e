"""Reading training tables as the worker reads the stream: time stamps, repeated times, rows without a sensor."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from aestream.errors import DataError
from aestream.training.datasets import read_segments, ts_to_ms


def test_iso_stamps_with_and_without_a_fraction_are_read() -> None:
    """pandas inferred one format from the first stamp and refused the others, while the worker's codec reads
    each: ``datetime.isoformat()`` drops a zero fraction."""
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    stamps = [(t0 + dt.timedelta(milliseconds=250 * i)).isoformat() for i in range(5)]  # ...:00, ...:00.250000
    assert ts_to_ms(pd.Series(stamps, name="ts")).tolist() == [1767225600000 + 250 * i for i in range(5)]
    two_days = ts_to_ms(pd.Series(["1/2/2026 10:00", "1/3/2026 10:00"], name="ts"))  # not ISO: still inferred
    assert two_days[1] - two_days[0] == 86_400_000


def test_a_repeated_time_keeps_its_first_reading_as_the_worker_does() -> None:
    frame = pd.DataFrame({"ts": [0, 1000, 1000, 2000], "a": [1.0, 2.0, 99.0, 3.0]})
    assert [s.ravel().tolist() for s in read_segments(frame, ["a"], max_gap_ms=10_000)] == [[1.0, 2.0, 3.0]]
    assert read_segments(frame.iloc[:0], ["a"], max_gap_ms=10_000) == []


def test_a_row_without_a_sensor_is_named_not_dropped() -> None:
    frame = pd.DataFrame({"ts": [0, 1000, 2000], "sensor": ["p1", None, "p1"], "a": [1.0, 2.0, 3.0]})
    with pytest.raises(DataError, match="data column 'sensor' is empty at row 1"):
        read_segments(frame, ["a"], max_gap_ms=10_000)
