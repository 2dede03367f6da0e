"""A poll of batched messages has its blocks cut together (``Windower.cut_blocks``); it must give what the same
records give one poll each: the same windows, events (ids, order, sources) and counts."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from aestream import worker as worker_module
from aestream.commands.simulate import Plant
from aestream.config import Config
from aestream.detect.thresholds import AlarmRule
from aestream.stream.codec import ReadingDecoder
from aestream.stream.messages import Record
from aestream.worker import SHORT_RUN, Worker

CHANNELS = ("temperature", "pressure", "vibration", "current")
T0 = 1_767_225_600_000


def _records() -> list[Record]:
    """Five sensors in batched (array) and columnar messages, several per sensor, interleaved; a single-reading
    message in the middle, a block repeated (late), a gap inside one sensor's stream."""
    plant = Plant(5, CHANNELS, seed=4)
    values = plant.signal(240)
    docs: list[Any] = []
    for start in range(0, 240, 24):
        for i, sensor in enumerate(plant.sensors):
            steps = range(start, start + 24)
            ts = [T0 + s * 1000 + (60_000 if i == 2 and s >= 120 else 0) for s in steps]  # sensor 2: a gap
            rows = [values[i, s].round(5).tolist() for s in steps]
            if i % 2:
                docs.append({"sensor": sensor, "ts": ts, "values": rows})  # columnar
            else:
                docs.append([{"sensor": sensor, "ts": t, "values": v} for t, v in zip(ts, rows)])  # array
        if start == 96:
            docs.append(docs[-3])  # a block again: every reading late
            docs.append({"sensor": "solo", "ts": T0, "values": [1.0, 2.0, 3.0, 4.0]})  # a single reading
    return [Record("in", 0, i, b"k", json.dumps(d).encode(), 0, False) for i, d in enumerate(docs)]


def _same(a: Any, b: Any) -> bool:
    """Equal, floats within float32 rounding: the model scores a poll's windows as one batch, and a float32 matmul
    rounds differently with the batch's shape (so may a share rounded to 4 decimals, by its last digit)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1.5e-4)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


@pytest.mark.parametrize("baselines", ["off", "shared"])
def test_a_poll_of_blocks_gives_what_its_records_give_one_poll_each(train_small: Any, one_model: Any,
                                                                    recording_sink: Any, baselines: str) -> None:
    """With baselines, each sensor calibrates on its first 100 readings, so a poll holds windows that calibrate
    and windows that are scored, and calibrations that finish in it."""
    cfg = Config().replace(stream={"channels": CHANNELS, "window_size": 16, "stride": 3},
                           baselines={"mode": baselines, "n_readings": 100},
                           threshold={"sensors": {"*": 1e-12}})  # each sensor's own threshold to ~0 as well
    bundle = train_small(cfg)
    recs = _records()
    # as kafka-python's fetch process hands them over: its batched messages decoded (Record.decoded)
    blocks = ReadingDecoder(CHANNELS).blocks([r.value for r in recs])
    assert sum(b is not None for b in blocks) > 20 and blocks.count(None) == 1  # the single reading
    decoded = [r._replace(decoded=b) for r, b in zip(recs, blocks)]
    runs = []
    for polls in ([recs[:30], recs[30:]], [[r] for r in recs], [decoded[:30], decoded[30:]]):
        sink = recording_sink()
        worker = Worker(cfg, None, sink, one_model(bundle, threshold=1e-9))  # every window an event
        worker.refresh_model(force=True)
        stats = [worker.process(p) for p in polls]
        runs.append(([json.loads(m.value) for m in sink.sent], stats))
    (events_ref, stats_ref) = runs[1]
    for events, stats in (runs[0], runs[2]):
        assert len(events) > 100
        for i, (e, ref) in enumerate(zip(events, events_ref)):
            assert _same(e, ref), (i, e, ref)
        assert len(events) == len(events_ref)
        for field in ("readings", "windows", "events", "late", "dead_letters"):
            assert sum(getattr(s, field) for s in stats) == sum(getattr(s, field) for s in stats_ref), field
    assert sum(s.late for s in stats) == 24


def test_the_alarm_rule_over_a_steps_runs_of_windows_is_the_rule_window_by_window(train_small: Any,
                                                                                     one_model: Any) -> None:
    """A step's windows come in runs of one sensor; short runs take the scalar rule, long ones ``update_many``:
    either way each window gets what the rule fed one window at a time gives, and the state carries into the next
    step."""
    cfg = Config().replace(stream={"channels": CHANNELS, "window_size": 16, "stride": 3}, baselines={"mode": "off"},
                           threshold={"k": 2, "n": 4, "smoothing": 3})
    worker = Worker(cfg, None, None, one_model(train_small(cfg), threshold=1.0))  # type: ignore[arg-type]
    worker.refresh_model(force=True)
    ref = AlarmRule(1.0, k=2, n=4, smoothing=3)
    rng = np.random.default_rng(3)
    lengths = [1, 2, SHORT_RUN, SHORT_RUN + 1, 30, 3]
    for step in range(3):
        sensors = [f"s{(i + step) % 4}" for i, n in enumerate(lengths) for _ in range(n)]
        scores = rng.uniform(0.0, 2.0, len(sensors))
        smoothed, alarms = worker._alarms(sensors, scores)
        expected = [ref.update(s, float(x)) for s, x in zip(sensors, scores)]
        assert np.allclose(smoothed, [e[0] for e in expected], rtol=1e-12)
        assert alarms.tolist() == [e[1] for e in expected]
        assert 0 < alarms.sum() < len(alarms)


def test_a_poll_over_chunk_bytes_is_processed_in_chunks_that_give_what_one_poll_each_gives(
        train_small: Any, one_model: Any, recording_sink: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A poll larger than ``CHUNK_BYTES`` is windowed and scored a chunk at a time, in order; its events and counts
    are those of its records one poll each."""
    cfg = Config().replace(stream={"channels": CHANNELS, "window_size": 16, "stride": 3},
                           baselines={"mode": "shared", "n_readings": 100}, threshold={"sensors": {"*": 1e-12}})
    bundle = train_small(cfg)
    recs = _records()
    limit = 4 * max(len(r.value or b"") for r in recs)
    chunks = list(worker_module._chunks(recs, limit))
    assert len(chunks) > 3 and [r for c in chunks for r in c] == recs
    assert all(sum(len(r.value or b"") for r in c) <= limit for c in chunks)
    assert list(worker_module._chunks(recs[:3], limit)) == [recs[:3]]
    monkeypatch.setattr(worker_module, "CHUNK_BYTES", limit)
    runs = []
    for polls in ([recs], [[r] for r in recs]):
        sink = recording_sink()
        worker = Worker(cfg, None, sink, one_model(bundle, threshold=1e-9))
        worker.refresh_model(force=True)
        scored: list[int] = []
        score = worker._score
        worker._score = lambda c, st, seen=scored, f=score: seen.append(len(c)) or f(c, st)  # type: ignore
        stats = [worker.process(p) for p in polls]
        runs.append(([json.loads(m.value) for m in sink.sent], stats, scored))
    (events, stats, scored), (events_ref, stats_ref, _) = runs
    assert len(scored) >= len(chunks) - 1  # the one poll was scored a chunk at a time (a chunk may only calibrate)
    assert len(events) == len(events_ref) > 100
    for i, (e, ref) in enumerate(zip(events, events_ref)):
        assert _same(e, ref), (i, e, ref)
    for field in ("readings", "windows", "events", "late", "dead_letters"):
        assert sum(getattr(s, field) for s in stats) == sum(getattr(s, field) for s in stats_ref), field
