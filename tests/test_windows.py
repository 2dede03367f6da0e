from __future__ import annotations

import numpy as np

from aestream.stream.windows import LATE, Window, Windower


def _push(w: Windower, sensor: str, ts: list[int]) -> list:
    return [w.push(sensor, t, (float(t), -float(t))) for t in ts]


def test_windows_close_every_stride_and_hold_the_last_readings_in_order() -> None:
    w = Windower(window_size=4, stride=2, n_channels=2, max_gap_ms=10)
    out = [x for x in _push(w, "s", list(range(1, 11))) if x is not None]
    assert [x.end_ms for x in out] == [4, 6, 8, 10]
    assert [x.start_ms for x in out] == [1, 3, 5, 7]
    np.testing.assert_array_equal(out[-1].values[:, 0], [7, 8, 9, 10])
    np.testing.assert_array_equal(out[-1].values[:, 1], [-7, -8, -9, -10])
    assert out[0].values.dtype == np.float32


def test_late_and_duplicate_readings_are_dropped_and_counted() -> None:
    w = Windower(window_size=2, stride=1, n_channels=2, max_gap_ms=10)
    assert _push(w, "s", [5, 5, 3])[1:] == [LATE, LATE]
    assert w.n_late == 2


def test_a_gap_restarts_the_window_and_sensors_are_independent() -> None:
    w = Windower(window_size=3, stride=1, n_channels=2, max_gap_ms=10)
    _push(w, "a", [1, 2])
    _push(w, "b", [1, 2, 3])
    assert _push(w, "a", [100]) == [None] and w.n_gaps == 1  # 2 → 100 is a gap: a starts over
    res = _push(w, "a", [101, 102])
    assert res[0] is None and res[1].start_ms == 100


def test_idle_sensors_are_evicted_after_the_ttl() -> None:
    w = Windower(window_size=2, stride=1, n_channels=2, max_gap_ms=10)
    w.push("old", 1, (0.0, 0.0), now=0.0)
    w.push("new", 1, (0.0, 0.0), now=100.0)
    assert w.evict_idle(now=101.0, ttl_s=50.0) == ["old"] and len(w) == 1


def test_push_block_gives_exactly_what_pushing_one_by_one_gives() -> None:
    rng = np.random.default_rng(3)
    for trial in range(30):
        w = int(rng.integers(2, 9))
        stride, stride_ms = (int(rng.integers(1, w + 1)), 0) if trial % 2 else (1, int(rng.integers(1, 10)))
        one = Windower(w, stride, 2, max_gap_ms=5, stride_ms=stride_ms)
        block = Windower(w, stride, 2, max_gap_ms=5, stride_ms=stride_ms)
        ts = np.cumsum(rng.integers(1, 4 if trial % 3 else 8, size=60))  # some trials have gaps > 5
        if trial % 4 == 0:
            ts[30] = ts[29]  # a duplicate: late
        vals = rng.normal(size=(60, 2))
        expected = [x for x in (one.push("s", int(t), tuple(v)) for t, v in zip(ts, vals)) if x not in (None, LATE)]
        got: list = []
        late = 0
        for lo, hi in ((0, 7), (7, 8), (8, 31), (31, 50)):
            windows, n_late = block.push_block("s", ts[lo:hi], vals[lo:hi])
            got += windows
            late += n_late
        for t, v in zip(ts[50:], vals[50:]):  # and on one by one from where the blocks left the ring
            x = block.push("s", int(t), tuple(v))
            if x not in (None, LATE):
                got.append(x)
        assert late == one.n_late
        assert [(x.start_ms, x.end_ms, x.n_new) for x in got] == [(x.start_ms, x.end_ms, x.n_new) for x in expected]
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a.values, b.values)



def _one_by_one(windower: Windower, sensor: str, ts: np.ndarray, values: np.ndarray) -> tuple[
        list[Window], list[int], int]:
    """A block through :meth:`Windower.push`, reading by reading: its windows, where each ends, how many late."""
    out, at, late = [], [], 0
    for i, (t, v) in enumerate(zip(ts.tolist(), values)):
        res = windower.push(sensor, t, v)
        late += res is LATE
        if isinstance(res, Window):
            out.append(res)
            at.append(i)
    return out, at, late


def test_a_polls_blocks_of_many_sensors_give_what_each_block_alone_gives() -> None:
    """push_blocks cuts the in-order sensors' blocks together; any poll must give what block after block gives:
    sensors interleaved, several blocks of one sensor, gaps and duplicates inside and between blocks, empty
    blocks, restored phases, both strides."""
    rng = np.random.default_rng(11)
    for trial in range(40):
        w = int(rng.integers(1, 9))
        stride, stride_ms = (int(rng.integers(1, w + 1)), 0) if trial % 2 else (1, int(rng.integers(1, 10)))
        together = Windower(w, stride, 2, max_gap_ms=5, stride_ms=stride_ms)
        apart = Windower(w, stride, 2, max_gap_ms=5, stride_ms=stride_ms)
        clocks = {f"s{i}": 0 for i in range(4)}
        for poll in range(6):
            blocks = []
            for _ in range(int(rng.integers(1, 9))):
                sensor = f"s{int(rng.integers(0, 4))}"
                k = int(rng.integers(0, 12))
                ts = clocks[sensor] + np.cumsum(rng.integers(1, 4 if trial % 3 else 8, size=k))
                if k > 2 and rng.random() < 0.1:
                    ts[1] = ts[0]  # a duplicate: late
                clocks[sensor] = int(ts[-1]) if k else clocks[sensor]
                if rng.random() < 0.1:
                    clocks[sensor] += 20  # a gap before the sensor's next block
                blocks.append((sensor, ts.astype(np.int64), rng.normal(size=(k, 2))))
            if poll == 3 and stride > 1:  # as after a replay: phases handed over
                phases = {s: int(rng.integers(0, stride)) for s in clocks}
                assert together.restore_phases(phases) == apart.restore_phases(phases)
            got = together.push_blocks(blocks)
            expected = [_one_by_one(apart, *b) for b in blocks]  # reading by reading, block after block
            for (gw, gat, glate), (ew, eat, elate) in zip(got, expected):
                assert (gat, glate) == (eat, elate)
                assert [(x.sensor, x.start_ms, x.end_ms, x.n_new) for x in gw] == [
                    (x.sensor, x.start_ms, x.end_ms, x.n_new) for x in ew]
                for a, b in zip(gw, ew):
                    np.testing.assert_array_equal(a.values, b.values)
            assert together.n_late == apart.n_late and together.n_gaps == apart.n_gaps
            assert together.phases(clocks) == apart.phases(clocks)


def test_with_stride_ms_windows_close_on_the_epoch_grid() -> None:
    w = Windower(window_size=5, stride=1, n_channels=2, max_gap_ms=5_000, stride_ms=3_000)
    ends = [x.end_ms for x in _push(w, "s", [1_000 * i for i in range(7, 40)]) if x is not None]
    assert ends == [11_000, *range(12_000, 40_000, 3_000)]  # the first full window (11 s), then the 3 s grid
    w = Windower(window_size=2, stride=1, n_channels=2, max_gap_ms=5_000, stride_ms=3_000)
    ends = [x.end_ms for x in _push(w, "s", [0, 2_900, 3_100, 3_200, 7_000, 8_999, 9_000]) if x is not None]
    assert ends == [2_900, 3_100, 7_000, 9_000]  # the first reading in each new cell, however irregular
    ends = [x.end_ms for x in _push(w, "s", [20_000, 20_500, 21_000, 22_000]) if x is not None]
    assert ends == [20_500, 21_000]  # after a gap: the first full window, then the grid


def test_with_stride_ms_a_rebuild_from_any_point_closes_windows_on_the_same_readings() -> None:
    rng = np.random.default_rng(7)
    for _ in range(40):
        size, jitter = int(rng.integers(2, 12)), int(rng.integers(0, 400))
        stride_ms = int(rng.integers(1_000, 5 * 1_000))
        ts = 1_767_225_600_000 + np.cumsum(1_000 + rng.integers(-jitter, jitter + 1, size=300))
        full = Windower(size, 1, 2, max_gap_ms=5_000, stride_ms=stride_ms)
        ends = [x.end_ms for x in _push(full, "s", ts.tolist()) if x is not None]
        assert len(ends) >= 0.9 * (ts[-1] - ts[size]) / max(stride_ms, 1_400) - 1  # one per cell with a reading
        start = int(rng.integers(1, 200))
        rebuilt = Windower(size, 1, 2, max_gap_ms=5_000, stride_ms=stride_ms)
        again = [x.end_ms for x in _push(rebuilt, "s", ts[start:].tolist()) if x is not None]
        assert again[0] == ts[start + size - 1]  # the rebuild's first full window (replayed, never emitted)
        assert again[1:] == [e for e in ends if e > ts[start + size - 1]]
        cells = np.asarray(ends[1:]) // stride_ms
        assert (np.diff(cells) > 0).all()  # after the first, one window per cell


def _ends(w: Windower, ts: np.ndarray, block: bool) -> list[int]:
    """Window ends of ``ts`` pushed into ``w`` one by one or as blocks of up to 7 readings."""
    if not block:
        return [x.end_ms for x in _push(w, "s", ts.tolist()) if x is not None and x is not LATE]
    out = []
    for lo in range(0, len(ts), 7):
        out += [x.end_ms for x in w.push_block("s", ts[lo : lo + 7], np.zeros((len(ts[lo : lo + 7]), 2)))[0]]
    return out


def test_a_count_stride_rebuilt_from_any_point_with_the_committed_phase_closes_on_the_same_readings() -> None:
    rng = np.random.default_rng(11)
    for trial in range(60):
        size, stride = int(rng.integers(2, 10)), int(rng.integers(2, 6))
        steps = rng.integers(1, 3, size=200)
        steps[120] = 50  # a gap restarts the count (and the phase) for both
        ts = np.cumsum(steps)
        full = Windower(size, stride, 2, max_gap_ms=10)
        commit = int(rng.integers(30, 180))
        start = commit - int(rng.integers(1, 3 * size))  # the lookback: at times less than a window
        ends = _ends(full, ts[:commit], block=trial % 2 == 0)
        phase = full.phases(["s", "other"])
        ends += _ends(full, ts[commit:], block=False)
        assert list(phase) == ["s"]
        rebuilt = Windower(size, stride, 2, max_gap_ms=10)
        replayed = _ends(rebuilt, ts[start:commit], block=trial % 3 == 0)
        assert rebuilt.restore_phases(phase) == 1 and rebuilt.phases(["s"]) == phase
        live = _ends(rebuilt, ts[commit:], block=trial % 2 == 1)
        after = [e for e in ends if e > ts[commit - 1]]
        if commit - start >= size:  # the replay held a full window: on the grid
            assert live == after, (trial, size, stride, commit, start)
        elif start <= 120 < start + size:  # a gap before its buffer fills: from the gap on (which restarts both)
            assert live == [e for e in after if e >= ts[120]], (trial, size, stride, commit, start)
        else:  # its first full window closes too, so every reading is in one; then the grid
            assert live[1:] == [e for e in after if e > live[0]] and live[0] == ts[start + size - 1]
        assert all(e >= ts[start + size - 1] for e in replayed + live), "a window of fewer than size readings"


def test_phases_count_from_the_last_gap_and_a_restored_phase_ends_there() -> None:
    w = Windower(window_size=2, stride=3, n_channels=2, max_gap_ms=10)
    _push(w, "s", [1, 2, 3, 4])
    assert w.phases(["s"]) == {"s": 1}
    assert w.restore_phases({"s": 0, "unknown": 2}) == 1 and w.phases(["s"]) == {"s": 0}
    assert [x.end_ms for x in _push(w, "s", [5, 6, 7, 8]) if x] == [6]  # 2 readings on, not 1 (phase 1)
    assert [x.end_ms for x in _push(w, "s", [100, 101, 102, 103, 104]) if x] == [101, 104]  # a gap: from 0 again


def test_a_sensor_fed_only_by_blocks_is_not_evicted_while_its_blocks_keep_coming() -> None:
    w = Windower(window_size=2, stride=1, n_channels=2, max_gap_ms=10)
    w.push_block("s", np.array([1, 2, 3]), np.zeros((3, 2)), now=0.0)
    w.push_block("s", np.array([4, 5, 6]), np.zeros((3, 2)), now=100.0)
    assert w.evict_idle(now=101.0, ttl_s=50.0) == [] and len(w) == 1
    assert w.evict_idle(now=151.0, ttl_s=50.0) == ["s"] and len(w) == 0


def test_a_block_that_opens_on_the_sensors_last_timestamp_drops_that_reading_as_late() -> None:
    w = Windower(window_size=2, stride=1, n_channels=2, max_gap_ms=10)
    w.push_block("s", np.array([1, 2, 3]), np.zeros((3, 2)))
    windows, late = w.push_block("s", np.array([3, 4, 5]), np.array([[9.0, 9.0], [4.0, 4.0], [5.0, 5.0]]))
    assert late == 1 and w.n_late == 1
    assert [(x.start_ms, x.end_ms) for x in windows] == [(3, 4), (4, 5)]
    np.testing.assert_array_equal(windows[0].values, [[0.0, 0.0], [4.0, 4.0]])  # the first 3's values, not the 9s


def test_a_window_counts_the_readings_since_its_sensors_window_before() -> None:
    """What a calibration takes of each window: the readings no window before held (all of it after a gap)."""
    w = Windower(window_size=4, stride=3, n_channels=2, max_gap_ms=5)
    got = [(x.end_ms, x.n_new) for x in _push(w, "s", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) if x is not None]
    assert got == [(4, 4), (7, 3), (10, 3)]
    w.restore_phases({"s": 0})  # as a replay's end: the next reading closes one
    assert (w.push("s", 11, (0.0, 0.0)).n_new, w.push("s", 20, (0.0, 0.0))) == (1, None)  # type: ignore[union-attr]
    g = Windower(window_size=4, stride=1, n_channels=2, max_gap_ms=5_000, stride_ms=2_000)
    ends = [(x.end_ms, x.n_new) for x in _push(g, "s", [1_000 * i for i in range(1, 12)]) if x is not None]
    assert ends == [(4_000, 4), (6_000, 2), (8_000, 2), (10_000, 2)]
