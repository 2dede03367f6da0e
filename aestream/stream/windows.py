"""Per-sensor sliding windows over event time, kept in numpy ring buffers.

Each sensor keeps the last ``window_size`` readings. Once it holds a full window, every ``stride``-th reading
closes a window — or, with ``stride_ms``, the first reading in each new ``stride_ms`` cell of event time (cells
aligned to the Unix epoch, as hopping windows in stream processors; the first full window of a sensor, or after a
gap, closes too, so every reading is in some window). The grid depends on the readings alone, so a worker that
rebuilds a sensor from a replay (holding at least a window of its readings) closes windows on the same readings
as the one before it, and replayed events repeat their ids. A count depends on where the worker started reading:
its checkpoint is :meth:`Windower.phases`, which the worker commits with its offsets (:mod:`aestream.stream.phase`) and
the next worker hands to :meth:`Windower.restore_phases` once it has replayed up to those offsets.
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
from typing import NamedTuple

import numpy as np

__all__ = ["LATE", "Window", "Windower"]


class _Late:
    def __repr__(self) -> str:
        return "LATE"


LATE = _Late()


class Window(NamedTuple):
    """A closed window: ``values`` is ``(window_size, n_channels)`` float32, oldest reading first."""

    sensor: str
    start_ms: int
    end_ms: int
    values: np.ndarray


class _SensorState:
    __slots__ = ("buf", "count", "last_ts", "pos", "seen_at", "shift", "ts")

    def __init__(self, window_size: int, n_channels: int) -> None:
        # Each reading is written twice, at pos and pos + window_size, so every window is one contiguous slice.
        self.buf = np.zeros((2 * window_size, n_channels), dtype=np.float32)
        self.ts = np.zeros(2 * window_size, dtype=np.int64)
        self.pos = 0
        self.count = 0
        self.shift = 0  # added to count in the closing rule of a count stride (restore_phases)
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
            state.count = state.shift = 0
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
        start = state.pos
        return Window(sensor, int(state.ts[start]), ts_ms, state.buf[start : start + w].copy())

    def push_block(self, sensor: str, ts_ms: np.ndarray, values: np.ndarray, now: float = 0.0) -> tuple[
            list[Window], int]:
        """Add one sensor's readings ``(k,)``/``(k, C)`` at once; returns the windows they close and how many
        readings were late. Vectorised when the block is in order and gap-free (the usual batched message),
        else reading by reading with the same result.
        """
        windows, _, late = self.push_block_at(sensor, ts_ms, values, now)
        return windows, late

    def push_block_at(self, sensor: str, ts_ms: np.ndarray, values: np.ndarray, now: float = 0.0) -> tuple[
            list[Window], list[int], int]:
        """:meth:`push_block`, also giving the index in the block of each window's last reading."""
        state = self._sensors.get(sensor)
        k = len(ts_ms)
        diffs = np.diff(ts_ms)
        in_order = k > 0 and bool((diffs > 0).all()) and bool((diffs <= self.max_gap_ms).all())
        if state is not None:
            step = int(ts_ms[0]) - state.last_ts if k else 0
            in_order = in_order and 0 < step <= self.max_gap_ms
        out: list[Window] = []
        at: list[int] = []
        if not in_order:
            late = 0
            for i, (t, v) in enumerate(zip(ts_ms.tolist(), values)):
                res = self.push(sensor, t, v, now)
                late += res is LATE
                if isinstance(res, Window):
                    out.append(res)
                    at.append(i)
            return out, at, late
        if state is None:
            state = self._sensors[sensor] = _SensorState(self.window_size, self.n_channels)
        w, p = self.window_size, state.pos
        h = min(state.count, w - 1)
        vals = np.concatenate([state.buf[p + w - h : p + w], values.astype(np.float32, copy=False)])
        stamps = np.concatenate([state.ts[p + w - h : p + w], ts_ms.astype(np.int64, copy=False)])
        counts = state.count + 1 + np.arange(k)
        if self.stride_ms:  # a new grid cell since the reading before (which is in stamps once counts >= w)
            due = (np.diff(stamps // self.stride_ms, prepend=0)[h:] != 0) | (counts == w)
        else:
            due = ((counts + state.shift - w) % self.stride == 0) | (counts == w)
        ends = np.flatnonzero((counts >= w) & due) + h  # indices into vals
        if len(ends):
            step, item = vals.strides  # vals is a fresh concatenation: C-contiguous
            views = np.lib.stride_tricks.as_strided(vals, (len(vals) - w + 1, w, vals.shape[1]), (step, step, item),
                                                    writeable=False)  # (n, w, C): every window of the block
            # one gather for all the block's windows; each Window holds a view of it (nothing writes to them)
            block = views[ends - w + 1]  # (windows, w, C)
            out = [Window(sensor, s, e, v) for s, e, v in zip(stamps[ends - w + 1].tolist(), stamps[ends].tolist(),
                                                              block)]
            at = (ends - h).tolist()
        if len(vals) >= w:  # the block ends on a full window: lay the ring out afresh from position 0
            state.buf[:w] = state.buf[w:] = vals[-w:]
            state.ts[:w] = state.ts[w:] = stamps[-w:]
            state.pos = 0
        else:
            m = len(vals)
            new_pos = (p + k) % w
            idx = (new_pos - m + np.arange(m)) % w
            state.buf[idx] = state.buf[idx + w] = vals
            state.ts[idx] = state.ts[idx + w] = stamps
            state.pos = new_pos
        state.count += k
        state.last_ts = int(ts_ms[-1])
        state.seen_at = now
        return out, at, 0

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
