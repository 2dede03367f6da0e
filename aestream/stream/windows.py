"""Per-sensor sliding windows over event time, kept in numpy ring buffers.

Each sensor keeps the last ``window_size`` readings. Once it holds a full window, every ``stride``-th reading
closes a window — or, with ``stride_ms``, the first reading in each new ``stride_ms`` cell of event time (cells
aligned to the Unix epoch, as hopping windows in stream processors; the first full window of a sensor, or after a
gap, closes too). Every reading is in some window, but for the readings after a sensor's last window before a gap
(up to ``stride - 1``, or the rest of a cell), the earliest of a cell holding more than ``window_size`` readings,
and those that run into a gap before they fill a window (counted in :attr:`Windower.unwindowed` for the caller).
The grid depends on the readings alone, so a worker that rebuilds a sensor from a replay (holding at least a window of
its readings) closes windows on the same readings as the one before it, and replayed events repeat their ids. A
count depends on where the worker started reading: its checkpoint is :meth:`Windower.phases`, which the worker
commits with its offsets (:mod:`aestream.stream.phase`) and the next worker hands to
:meth:`Windower.restore_phases` once it has replayed up to those offsets.
Policy for time, documented in the README:

* **late or duplicate** readings (``ts`` not after the sensor's last ``ts``) are dropped and counted: Kafka keeps
  one sensor's readings in order, so these are producer retries or clock faults;
* a **gap** longer than ``max_gap_ms`` between two readings restarts the sensor's window (no window spans a gap);
* sensors silent for ``ttl_s`` (processing time) are evicted by :meth:`Windower.evict_idle`.

>>> w = Windower(window_size=3, stride=2, n_channels=1, max_gap_ms=1000)
>>> [w.push("s", t, (float(t),)) is not None for t in (1, 2, 3, 4, 5)]
[False, False, True, False, True]
>>> w.push("s", 5, (0.0,)) is LATE
True
>>> w.phases(["s"])  # 5 readings, a window at the 3rd and 5th: the next closes 2 readings on
{'s': 1}
>>> r = Windower(window_size=3, stride=2, n_channels=1, max_gap_ms=1000)  # rebuilt from readings 2..5
>>> [r.push("s", t, (float(t),)) is not None for t in (2, 3, 4, 5)], r.restore_phases({"s": 1})
([False, False, True, False], 1)
>>> [(w.push("s", t, (0.0,)) is not None, r.push("s", t, (0.0,)) is not None) for t in (6, 7)]
[(False, False), (True, True)]
>>> g = Windower(window_size=3, stride=1, n_channels=1, max_gap_ms=1000, stride_ms=2)
>>> [g.push("s", t, (float(t),)) is not None for t in (1, 2, 3, 4, 5, 6)]
[False, False, True, True, False, True]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["LATE", "Cut", "Window", "Windower"]


class _Late:
    def __repr__(self) -> str:
        return "LATE"


LATE = _Late()


class Window(NamedTuple):
    """A closed window: ``values`` is ``(window_size, n_channels)`` float32, oldest reading first; its last
    ``n_new`` readings came after the sensor's window before (at most ``window_size``; 0: not known)."""

    sensor: str
    start_ms: int
    end_ms: int
    values: np.ndarray
    n_new: int = 0


class Cut(NamedTuple):
    """The windows a poll's blocks close, column by column, in block order (a block's in the order its readings
    close them): window ``j`` ends on reading ``at[j]`` of block ``block[j]``; ``late[i]`` is how many of block
    ``i``'s readings were late; ``n_new[j]``, :attr:`Window.n_new` of window ``j``."""

    block: list[int]
    at: list[int]
    sensors: list[str]
    start_ms: list[int]
    end_ms: list[int]
    values: np.ndarray  # (windows, window_size, n_channels) float32
    late: list[int]
    n_new: list[int]

    def window(self, j: int) -> Window:
        return Window(self.sensors[j], self.start_ms[j], self.end_ms[j], self.values[j], self.n_new[j])


def _no_cut(n_blocks: int, window_size: int, n_channels: int) -> Cut:
    return Cut([], [], [], [], [], np.empty((0, window_size, n_channels), np.float32), [0] * n_blocks, [])


def _merge(cut: Cut, others: list[tuple[int, Cut]]) -> Cut:
    """``cut`` with the windows of blocks cut on their own (each block 0 of its :class:`Cut`), in block order."""
    late = list(cut.late)
    parts = [cut]
    for i, c in others:
        late[i] = c.late[0]
        parts.append(c._replace(block=[i] * len(c.block)))
    block = [b for c in parts for b in c.block]
    order = np.argsort(block, kind="stable").tolist()

    def gather(field: str) -> list[Any]:
        flat = [x for c in parts for x in getattr(c, field)]
        return [flat[k] for k in order]

    values = np.concatenate([c.values for c in parts])[order]
    return Cut(gather("block"), gather("at"), gather("sensors"), gather("start_ms"), gather("end_ms"), values, late,
               gather("n_new"))


class _SensorState:
    __slots__ = ("buf", "closed_at", "count", "last_ts", "pos", "seen_at", "shift", "ts")

    def __init__(self, window_size: int, n_channels: int) -> None:
        # Each reading is written twice, at pos and pos + window_size, so every window is one contiguous slice.
        self.buf = np.zeros((2 * window_size, n_channels), dtype=np.float32)
        self.ts = np.zeros(2 * window_size, dtype=np.int64)
        self.pos = 0
        self.count = 0
        self.shift = 0  # added to count in the closing rule of a count stride (restore_phases)
        self.closed_at = 0  # count at its last window
        self.last_ts = -1
        self.seen_at = 0.0


class Windower:
    """Cuts each sensor's readings into windows of ``window_size`` readings every ``stride`` readings, or on
    an event-time grid of ``stride_ms`` when that is set."""

    def __init__(self, window_size: int, stride: int, n_channels: int, max_gap_ms: int,
                 stride_ms: int = 0) -> None:
        self.window_size = window_size
        self.stride = stride
        self.stride_ms = stride_ms
        self.n_channels = n_channels
        self.max_gap_ms = max_gap_ms
        self._sensors: dict[str, _SensorState] = {}
        self.n_late = 0
        self.n_gaps = 0
        # sensors whose readings before a gap never filled a window (none of them scored): the caller warns
        self.unwindowed: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._sensors)

    def push(self, sensor: str, ts_ms: int, values: Sequence[float], now: float = 0.0) -> Window | _Late | None:
        """Add one reading; returns the window it closes, :data:`LATE` if it was dropped, else ``None``."""
        state = self._sensors.get(sensor)
        if state is None:
            state = self._sensors[sensor] = _SensorState(self.window_size, self.n_channels)
        elif ts_ms <= state.last_ts:
            self.n_late += 1
            return LATE
        elif ts_ms - state.last_ts > self.max_gap_ms:
            self.n_gaps += 1
            if state.count < self.window_size:  # the readings since the last gap are in no window
                self.unwindowed[sensor] = self.unwindowed.get(sensor, 0) + state.count
            state.count = state.shift = state.closed_at = 0
        state.seen_at = now
        w = self.window_size
        p = state.pos
        state.buf[p] = values
        state.buf[p + w] = values
        state.ts[p] = ts_ms
        state.ts[p + w] = ts_ms
        state.pos = (p + 1) % w
        state.count += 1
        prev_ts, state.last_ts = state.last_ts, ts_ms
        if state.count < w:
            return None
        if self.stride_ms:
            if state.count > w and ts_ms // self.stride_ms == prev_ts // self.stride_ms:
                return None
        elif state.count > w and (state.count + state.shift - w) % self.stride:
            return None
        start, n_new, state.closed_at = state.pos, min(state.count - state.closed_at, w), state.count
        return Window(sensor, int(state.ts[start]), ts_ms, state.buf[start : start + w].copy(), n_new)

    def push_block(self, sensor: str, ts_ms: np.ndarray, values: np.ndarray, now: float = 0.0) -> tuple[
            list[Window], int]:
        """Add one sensor's readings ``(k,)``/``(k, C)`` at once; returns the windows they close and how many
        readings were late. Vectorised when the block is in order and gap-free (the usual batched message),
        else reading by reading with the same result.
        """
        windows, _, late = self.push_blocks([(sensor, ts_ms, values)], now)[0]
        return windows, late

    def push_blocks(self, blocks: Sequence[tuple[str, np.ndarray, np.ndarray]], now: float = 0.0) -> list[
            tuple[list[Window], list[int], int]]:
        """:meth:`push_block` for each of a poll's blocks ``(sensor, ts_ms, values)`` in turn, with the same
        results, also giving the index in its block of each window's last reading: :meth:`cut_blocks` as a list of
        windows a block."""
        cut = self.cut_blocks(blocks, now)
        results: list[tuple[list[Window], list[int], int]] = [([], [], late) for late in cut.late]
        for j, (b, at) in enumerate(zip(cut.block, cut.at)):
            results[b][0].append(cut.window(j))
            results[b][1].append(at)
        return results

    def cut_blocks(self, blocks: Sequence[tuple[str, np.ndarray, np.ndarray]], now: float = 0.0) -> Cut:
        """Each of a poll's blocks ``(sensor, ts_ms, values)`` in turn, as :meth:`push` reading by reading would
        take them: the windows they close, in block order, in arrays. The blocks of every sensor whose readings run
        in order and gap-free through all its blocks are cut into windows together, in one pass over the poll; any
        other sensor's go block by block."""
        by_sensor: dict[str, list[int]] = {}
        for i, (sensor, ts, _) in enumerate(blocks):
            if len(ts):
                by_sensor.setdefault(sensor, []).append(i)
        runs = []
        others: list[tuple[int, Cut]] = []  # (block, its windows) of the sensors taken block by block
        for sensor, idx in by_sensor.items():
            if self._in_order(sensor, [blocks[i][1] for i in idx]):
                runs.append((sensor, idx))
            elif len(idx) > 1:
                others.extend((i, self.cut_blocks([blocks[i]], now)) for i in idx)
            else:
                others.append((idx[0], self._push_each(*blocks[idx[0]], now)))
        cut = self._cut(runs, blocks, now) if runs else _no_cut(len(blocks), self.window_size, self.n_channels)
        return _merge(cut, others) if others else cut

    def _in_order(self, sensor: str, stamps: list[np.ndarray]) -> bool:
        """Whether these blocks' readings (in turn) follow the sensor's last one and each other, all within
        ``max_gap_ms``."""
        ts = stamps[0] if len(stamps) == 1 else np.concatenate(stamps)
        d = np.diff(ts)
        if not ((d > 0) & (d <= self.max_gap_ms)).all():
            return False
        state = self._sensors.get(sensor)
        return state is None or 0 < int(ts[0]) - state.last_ts <= self.max_gap_ms

    def _push_each(self, sensor: str, ts_ms: np.ndarray, values: np.ndarray, now: float) -> Cut:
        """One block reading by reading, as block 0 of a :class:`Cut`."""
        out: list[Window] = []
        at: list[int] = []
        late = 0
        for i, (t, v) in enumerate(zip(ts_ms.tolist(), values)):
            res = self.push(sensor, t, v, now)
            late += res is LATE
            if isinstance(res, Window):
                out.append(res)
                at.append(i)
        stacked = np.stack([w.values for w in out]) if out else np.empty((0, self.window_size, self.n_channels),
                                                                          np.float32)
        return Cut([0] * len(out), at, [sensor] * len(out), [w.start_ms for w in out], [w.end_ms for w in out],
                   stacked, [late], [w.n_new for w in out])

    def _cut(self, runs: list[tuple[str, list[int]]], blocks: Sequence[tuple[str, np.ndarray, np.ndarray]],
             now: float) -> Cut:
        """Each run (a sensor and its in-order blocks) after the up to ``window_size - 1`` readings its ring holds,
        all runs in one array: the windows every new reading closes, in one gather (in block order); then each
        ring's new tail."""
        w = self.window_size
        vals_parts: list[np.ndarray] = []
        ts_parts: list[np.ndarray] = []
        segments = []  # (sensor, state, first row, first new row, end row)
        spans: dict[int, tuple[int, int]] = {}  # block index → its rows
        row = 0
        for sensor, idx in runs:
            state = self._sensors.get(sensor)
            if state is None:
                state = self._sensors[sensor] = _SensorState(w, self.n_channels)
            h, p = min(state.count, w - 1), state.pos
            vals_parts.append(state.buf[p + w - h : p + w])
            ts_parts.append(state.ts[p + w - h : p + w])
            first = row
            row += h
            for i in idx:
                _, ts, values = blocks[i]
                vals_parts.append(values.astype(np.float32, copy=False))
                ts_parts.append(ts.astype(np.int64, copy=False))
                spans[i] = (row, row + len(ts))
                row += len(ts)
            segments.append((sensor, state, first, first + h, row))
        vals, stamps = np.concatenate(vals_parts), np.concatenate(ts_parts)
        new_lo = np.array([s[3] for s in segments])
        n_new = np.array([s[4] - s[3] for s in segments])
        rows = np.arange(n_new.sum()) + np.repeat(new_lo - np.cumsum(n_new) + n_new, n_new)  # every new reading
        counts = rows - np.repeat(new_lo - [s[1].count + 1 for s in segments], n_new)  # its count in its sensor
        if self.stride_ms:  # a new grid cell since the reading before (which is in the run once counts >= w)
            cell = stamps // self.stride_ms
            new_cell = np.empty(len(cell), dtype=bool)
            new_cell[1:] = cell[1:] != cell[:-1]
            for _, state, first, lo, _ in segments:  # a run's first row: against the sensor's last reading
                if first == lo:  # (held in no row when the ring gives none: window_size 1 or a new sensor)
                    new_cell[first] = state.count == 0 or cell[first] != state.last_ts // self.stride_ms
            due = new_cell[rows] | (counts == w)
        else:
            shifts = np.repeat([s[1].shift for s in segments], n_new)
            due = ((counts + shifts - w) % self.stride == 0) | (counts == w)
        closing = (counts >= w) & due
        ends = rows[closing]  # rows of the readings that close a window (in their run's rows)
        if len(ends):  # readings since the sensor's window before: its count then, in its run or its state
            at_count, of_segment = counts[closing], np.repeat(np.arange(len(segments)), n_new)[closing]
            opens = np.ones(len(ends), dtype=bool)  # a run's first window
            opens[1:] = of_segment[1:] != of_segment[:-1]
            before = np.empty_like(at_count)
            before[1:] = at_count[:-1]
            before[opens] = [segments[g][1].closed_at for g in of_segment[opens].tolist()]
            last = np.flatnonzero(np.append(opens[1:], True))
            for g, c in zip(of_segment[last].tolist(), at_count[last].tolist()):
                segments[g][1].closed_at = c
            n_since = np.minimum(at_count - before, w)
            # each end's block (its rows are contiguous, in order), then the ends in block order
            by_row = sorted(spans, key=lambda i: spans[i][0])
            lows = np.array([spans[i][0] for i in by_row])
            k = np.searchsorted(lows, ends, side="right") - 1
            of_end = np.array(by_row)[k]
            order = np.argsort(of_end, kind="stable")
            ends, k, n_since = ends[order], k[order], n_since[order]
            block = of_end[order].tolist()
            step, item = vals.strides  # a fresh concatenation: C-contiguous
            views = np.lib.stride_tricks.as_strided(vals, (len(vals) - w + 1, w, vals.shape[1]), (step, step, item),
                                                    writeable=False)  # (rows, w, C): a window ending at each row
            sensor_of = [b[0] for b in blocks]
            cut = Cut(block, (ends - lows[k]).tolist(), list(map(sensor_of.__getitem__, block)),
                      stamps[ends - w + 1].tolist(), stamps[ends].tolist(),
                      views[ends - w + 1], [0] * len(blocks), n_since.tolist())  # one copy: every window
        else:
            cut = _no_cut(len(blocks), w, self.n_channels)
        for _, state, first, lo, end in segments:
            n = end - first
            if n >= w:  # the run ends on a full window: lay the ring out afresh from position 0
                state.buf[:w] = state.buf[w:] = vals[end - w : end]
                state.ts[:w] = state.ts[w:] = stamps[end - w : end]
                state.pos = 0
            else:
                new_pos = (state.pos + end - lo) % w
                idx_ring = (new_pos - n + np.arange(n)) % w
                state.buf[idx_ring] = state.buf[idx_ring + w] = vals[first:end]
                state.ts[idx_ring] = state.ts[idx_ring + w] = stamps[first:end]
                state.pos = new_pos
            state.count += end - lo
            state.last_ts = int(stamps[end - 1])
            state.seen_at = now
        return cut

    def phases(self, sensors: Iterable[str]) -> dict[str, int]:
        """Where each of these sensors (those held) stands in its count stride: ``0 .. stride - 1``, equal for two
        windowers exactly when their next windows close on the same readings (a checkpoint of a count stride)."""
        held = self._sensors
        return {s: (st.count + st.shift) % self.stride for s in sensors if (st := held.get(s)) is not None}

    def restore_phases(self, phases: Mapping[str, int]) -> int:
        """Move held sensors to the given :meth:`phases` (after a replay, before live readings); returns how many
        moved. A window is still never closed on fewer than ``window_size`` readings, and a sensor restored
        before it holds a full window closes its first full window too (as after a gap), so every reading
        stays in a window; a later gap restarts the count as usual. Sensors not held are skipped."""
        n = 0
        for s, p in phases.items():
            st = self._sensors.get(s)
            if st is not None:
                st.shift = (p - st.count) % self.stride
                n += 1
        return n

    def drop(self, sensors: Iterable[str]) -> None:
        """Forget these sensors (their partitions moved away, or they are being rebuilt)."""
        for s in sensors:
            self._sensors.pop(s, None)

    def evict_idle(self, now: float, ttl_s: float) -> list[str]:
        """Forget sensors not seen for ``ttl_s`` seconds of processing time; returns their ids."""
        idle = [s for s, st in self._sensors.items() if now - st.seen_at > ttl_s]
        self.drop(idle)
        return idle
