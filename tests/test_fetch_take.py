"""The worker's end of the fetch process: what one poll takes from the socket (no broker, no child process)."""

from __future__ import annotations

from multiprocessing import Pipe
from multiprocessing.connection import Connection

import numpy as np

from aestream.kafka.kafka_python import _FetchProcess
from aestream.stream.codec import Block


def _end(epoch: int) -> tuple[_FetchProcess, Connection]:
    fetch = object.__new__(_FetchProcess)  # its socket only: the child's side is played by the test
    fetch.conn, child = Pipe(duplex=True)
    fetch.epoch, fetch.assigned = epoch, True
    return fetch, child


def _rows(partition: int, offsets: range) -> list[tuple[str, int, int, bytes, bytes, int]]:
    return [("t", partition, o, b"k", b"v%d" % o, 0) for o in offsets]


def test_a_poll_takes_every_batch_already_there_and_drops_stale_ones() -> None:
    fetch, child = _end(epoch=2)
    child.send(("records", 1, _rows(0, range(0, 5)), None))  # read before the last assignment
    child.send(("records", 2, _rows(0, range(5, 8)), None))
    child.send(("records", 2, _rows(1, range(0, 4)), None))
    rows, blocks = fetch.take(1.0, max_rows=2000)
    assert [(r[1], r[2]) for r in rows] == [(0, 5), (0, 6), (0, 7), (1, 0), (1, 1), (1, 2), (1, 3)]
    assert blocks is None
    assert fetch.take(0.0, max_rows=2000) == ([], None), "nothing is left behind"


def test_a_poll_stops_taking_at_max_rows_and_the_next_one_goes_on() -> None:
    fetch, child = _end(epoch=1)
    for start in range(0, 30, 10):
        child.send(("records", 1, _rows(0, range(start, start + 10)), None))
    first, _ = fetch.take(1.0, max_rows=15)
    second, _ = fetch.take(1.0, max_rows=15)
    assert [r[2] for r in first] == list(range(20)), "whole batches, until max_rows is reached"
    assert [r[2] for r in second] == list(range(20, 30))


def test_blocks_stay_aligned_with_their_records_across_batches() -> None:
    fetch, child = _end(epoch=1)
    block = Block("s", np.array([1], dtype=np.int64), np.zeros((1, 2)))
    child.send(("records", 1, _rows(0, range(0, 2)), [None, block]))
    child.send(("records", 1, _rows(0, range(2, 3)), [block]))
    rows, blocks = fetch.take(1.0, max_rows=2000)
    assert len(rows) == 3 and blocks is not None
    assert [b is not None for b in blocks] == [False, True, True]
