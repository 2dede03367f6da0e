"""A poll of plain single-reading messages takes the column-wise path; it must give what the message-by-message
path gives: the same windows, scores, events (ids and sources), late counts and dead letters."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from aestream.commands.simulate import Plant
from aestream.config import Config
from aestream.stream.messages import Record
from aestream.worker import Worker

CHANNELS = ("temperature", "pressure", "vibration", "current")
T0 = 1_767_225_600_000


def _records() -> list[Record]:
    """Four sensors interleaved, one of them with a long run (the vectorised block path), a late reading, a
    duplicate and an anomaly; the first 300 records are a replay."""
    plant = Plant(4, CHANNELS, seed=3)
    values = plant.signal(400)
    values[2, 300:330] += 5.0
    docs = [{"sensor": plant.sensors[i], "ts": T0 + step * 1000, "values": values[i, step].round(5).tolist()}
            for step in range(400) for i in range(4) if i != 3 or step < 200]
    docs += [{"sensor": plant.sensors[3], "ts": T0 + step * 1000, "values": values[3, step].round(5).tolist()}
             for step in range(200, 400)]  # 200 readings of one sensor in a row
    docs.insert(900, dict(docs[880]))  # a duplicate: late
    docs.insert(950, {**docs[940], "ts": docs[940]["ts"] - 5000})  # out of order: late
    return [Record("in", 0, i, d["sensor"].encode(), json.dumps(d).encode(), 0, i < 300) for i, d in enumerate(docs)]


def test_the_column_wise_path_gives_what_message_by_message_gives(train_small: Any, one_model: Any,
                                                                  recording_sink: Any) -> None:
    cfg = Config().replace(baselines={"mode": "off"}, stream={"channels": CHANNELS, "window_size": 16, "stride": 2})
    bundle = train_small(cfg)
    recs = _records()
    runs = []
    for columns in (True, False):
        sink = recording_sink()
        worker = Worker(cfg, None, sink, one_model(bundle))
        worker.refresh_model(force=True)
        taken: list[bool] = []

        def decode(docs: list[Any], real: Any = worker.decoder.columns, on: bool = columns,
                   taken: list[bool] = taken) -> Any:
            cols = real(docs) if on else None
            taken.append(cols is not None)
            return cols

        worker.decoder.columns = decode  # type: ignore[method-assign]
        stats = [worker.process(recs[i : i + 500]) for i in range(0, len(recs), 500)]
        runs.append((sink.sent, stats))
        assert taken == [columns] * 4  # with columns on, every poll went column-wise
    (sent, stats), (sent_ref, stats_ref) = runs
    for field in ("readings", "windows", "events", "late", "replayed", "dead_letters"):
        assert [getattr(s, field) for s in stats] == [getattr(s, field) for s in stats_ref], field
    assert sum(s.late for s in stats) == 2 and sum(s.events for s in stats) > 0
    events = sorted((json.loads(m.value) for m in sent), key=lambda e: e["event_id"])
    events_ref = sorted((json.loads(m.value) for m in sent_ref), key=lambda e: e["event_id"])
    assert [(e["event_id"], e["source"]) for e in events] == [(e["event_id"], e["source"]) for e in events_ref]
    np.testing.assert_allclose([e["score"] for e in events], [e["score"] for e in events_ref], rtol=1e-6)


def test_a_message_not_keyed_by_its_sensor_is_taken_and_warned_of_once_per_sensor(
        train_small: Any, one_model: Any, recording_sink: Any, caplog: Any) -> None:
    import logging

    cfg = Config().replace(baselines={"mode": "off"}, stream={"channels": CHANNELS, "window_size": 16, "stride": 2})
    worker = Worker(cfg, None, recording_sink(), one_model(train_small(cfg)))
    worker.refresh_model(force=True)

    def reading(sensor: str, i: int) -> bytes:
        return json.dumps({"sensor": sensor, "ts": T0 + 1000 * i, "values": [1.0, 2.0, 3.0, float(i)]}).encode()

    columnar = json.dumps({"sensor": "c", "ts": [T0, T0 + 1000], "values": [[1, 2, 3, 4], [1, 2, 3, 5]]}).encode()
    polls = [
        [Record("in", 0, i, b"other" if i % 2 else b"a", reading("a", i), 0) for i in range(40)],  # column-wise
        [Record("in", 1, 0, None, reading("b", 0), 0)],  # one message: the message-by-message path
        [Record("in", 1, 1, b"b", reading("b", 1), 0), Record("in", 1, 2, b"x", columnar, 0)],  # a block
        [Record("in", 0, 40 + i, b"a", reading("a", 40 + i), 0) for i in range(40)],  # keyed right: nothing
    ]
    caplog.set_level(logging.WARNING, logger="aestream.worker")
    stats = [worker.process(p) for p in polls]
    warned = [r.getMessage() for r in caplog.records if "not by its sensor id" in r.getMessage()]
    assert len(warned) == 3, warned
    assert warned[0].startswith("sensor a: the message at in[0]@1 is keyed b'other'"), "its first is keyed right"
    assert "sensor b: the message at in[1]@0 is keyed by nothing (null)" in warned[1]
    assert warned[2].startswith("sensor c: the message at in[1]@2 is keyed b'x'")
    assert [s.readings for s in stats] == [40, 1, 3, 40] and sum(s.dead_letters for s in stats) == 0


def test_a_sensor_sampled_less_often_than_the_gap_is_warned_of_once_as_never_scored(
        train_small: Any, one_model: Any, recording_sink: Any, caplog: Any) -> None:
    import logging

    cfg = Config().replace(baselines={"mode": "off"}, stream={"channels": CHANNELS, "window_size": 4, "stride": 1,
                                                              "max_gap_ms": 10_000})
    worker = Worker(cfg, None, recording_sink(), one_model(train_small(cfg)))
    worker.refresh_model(force=True)

    def reading(sensor: str, ts_ms: int) -> bytes:
        return json.dumps({"sensor": sensor, "ts": ts_ms, "values": [1.0, 2.0, 3.0, 4.0]}).encode()

    caplog.set_level(logging.WARNING, logger="aestream.worker")
    stats = [worker.process([Record("in", 0, 2 * i, b"slow", reading("slow", T0 + 15_000 * i), 0),
                             Record("in", 0, 2 * i + 1, b"fast", reading("fast", T0 + 1_000 * i), 0)])
             for i in range(10)]
    warned = [r.getMessage() for r in caplog.records if "stream.max_gap_ms" in r.getMessage()]
    assert len(warned) == 1, warned
    assert warned[0].startswith("sensor slow: 1 reading(s) ended in a gap (> stream.max_gap_ms = 10000 ms)")
    assert sum(s.windows for s in stats) == 10 - 3, "the fast sensor's windows alone"
