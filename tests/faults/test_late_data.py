"""Late and out-of-order data, per the documented time policy (docs/formats.md "Time, gaps and late data"):

* allowed lateness is zero per sensor: a reading whose ``ts`` is not after the sensor's previous accepted one is
  dropped and counted (``late``), never dead-lettered and never reorders a window;
* ``ts`` outside the years 2000–2200 is bad input: dead-lettered with the reason;
* a silence longer than ``stream.max_gap_ms`` restarts the sensor's window (no window spans it);
* a reading more than ``stream.max_future_ms`` ahead of its record's timestamp, or of the worker's clock (a clock
  fault), is dead-lettered with the reason and does not hold its sensor back;
* a sensor silent for ``stream.sensor_ttl_s`` is forgotten, so with ``max_future_ms = 0`` (off) one reading stamped
  far in the future holds that sensor's later readings back as late for at most that long.
"""

from __future__ import annotations

from typing import Any

import pytest

from aestream.config import Config
from aestream.stream.codec import encode_reading
from aestream.stream.messages import Record
from aestream.worker import Worker

pytestmark = pytest.mark.faults

T0 = 1_767_225_600_000
CHANNELS = ("temperature", "pressure", "vibration", "current")


class Feed:
    def __init__(self, worker: Worker) -> None:
        self.worker, self.offset = worker, 0

    def __call__(self, *readings: tuple[str, int] | bytes) -> Any:
        recs = []
        for r in readings:
            value = r if isinstance(r, bytes) else encode_reading(r[0], r[1], [1.0 + r[1] % 7, 2.0, 3.0, 4.0])
            recs.append(Record("in", 0, self.offset, b"k", value, 0))
            self.offset += 1
        return self.worker.process(recs)


@pytest.fixture()
def setup(train_small: Any, one_model: Any, recording_sink: Any) -> tuple[Config, Worker, Any, Feed, list[float]]:
    cfg = Config().replace(baselines={"mode": "off"},
                           stream={"channels": CHANNELS, "window_size": 4, "stride": 2, "max_gap_ms": 5000,
                                   "sensor_ttl_s": 30.0})
    now = [0.0]
    sink = recording_sink()
    worker = Worker(cfg, None, sink, one_model(train_small(cfg), threshold=1e-9),  # every window is an event
                    clock=lambda: now[0])
    worker.refresh_model(force=True)
    return cfg, worker, sink, Feed(worker), now


def _ends(stats: Any) -> list[int]:
    return [(e["window_end_ms"] - T0) // 1000 for e in stats.events_out]


def test_duplicates_and_out_of_order_readings_are_dropped_and_counted(setup: Any) -> None:
    cfg, _, sink, feed, _ = setup
    s = feed(*[("a", T0 + i * 1000) for i in range(4)])  # 0 1 2 3 → window ending at 3
    assert _ends(s) == [3] and s.late == 0
    s = feed(("a", T0 + 3000), ("a", T0 + 2000), ("a", T0 + 1000 - 1), ("a", 946_684_800_001))
    assert s.late == 4 and not s.events_out and s.dead_letters == 0, "dup, 1 s late, 1 ms late, year 2000"
    s = feed(("a", T0 + 4000), ("a", T0 + 5000))  # the stride continues as if nothing had come in between
    assert _ends(s) == [5] and s.events_out[0]["window_start_ms"] == T0 + 2000
    assert not [m for m in sink.sent if m.topic == cfg.kafka.dead_letter_topic]


def test_a_batch_with_readings_out_of_order_keeps_the_in_order_ones(setup: Any) -> None:
    _, _, _, feed, _ = setup
    batch = b"[" + b",".join(encode_reading("b", T0 + t * 1000, [1.0, 2.0, 3.0, 4.0]) for t in
                             (0, 1, 2, 1, 3, 3, 4, 5)) + b"]"
    s = feed(batch)
    assert s.late == 2 and s.readings == 8 and _ends(s) == [3, 5]


def test_timestamps_outside_2000_to_2200_are_dead_lettered_with_the_reason(setup: Any) -> None:
    cfg, _, sink, feed, _ = setup
    s = feed(("c", 1_767_225_600), ("c", 946_684_799_999), ("c", 7_258_118_400_000),
             b'{"sensor": "c", "ts": "2301-01-01T00:00:00Z", "values": [1, 2, 3, 4]}')
    assert s.dead_letters == 4 and s.late == 0
    reasons = [dict(m.headers)["aestream.reason"].decode() for m in sink.sent
               if m.topic == cfg.kafka.dead_letter_topic]
    assert all("outside 2000..2200" in r for r in reasons), reasons


def test_a_gap_longer_than_max_gap_restarts_the_window(setup: Any) -> None:
    _, worker, _, feed, _ = setup
    feed(*[("d", T0 + i * 1000) for i in range(4)])
    later = T0 + 3000 + 5001  # just over max_gap_ms
    s = feed(*[("d", later + i * 1000) for i in range(4)])
    assert [e["window_start_ms"] for e in s.events_out] == [later], "no window spans the gap"
    assert worker.windows.n_gaps == 1
    s = feed(("d", later + 3000 + 5000))  # exactly max_gap_ms: no restart
    assert worker.windows.n_gaps == 1 and s.late == 0


def test_a_reading_from_the_far_future_is_dead_lettered_and_its_sensor_goes_on(setup: Any) -> None:
    cfg, _, sink, feed, _ = setup
    feed(*[("e", T0 + i * 1000) for i in range(4)])
    future = feed(("e", 7_000_000_000_000))  # year 2191: inside the range, 165 years ahead of the worker's clock
    assert future.dead_letters == 1 and future.rejected == {"future": 1}
    (dead,) = [m for m in sink.sent if m.topic == cfg.kafka.dead_letter_topic]
    assert b"ahead of this host's clock" in dict(dead.headers)["aestream.reason"]
    s = feed(*[("e", T0 + (4 + i) * 1000) for i in range(3)])
    assert s.late == 0 and _ends(s) == [5], "the sensor's real readings go on"


def test_with_the_bound_off_a_far_future_reading_holds_its_sensor_back_only_until_the_ttl(
        train_small: Any, one_model: Any, recording_sink: Any) -> None:
    cfg = Config().replace(baselines={"mode": "off"},
                           stream={"channels": CHANNELS, "window_size": 4, "stride": 2, "max_gap_ms": 5000,
                                   "sensor_ttl_s": 30.0, "max_future_ms": 0})
    now = [0.0]
    worker = Worker(cfg, None, recording_sink(), one_model(train_small(cfg), threshold=1e-9), clock=lambda: now[0])
    worker.refresh_model(force=True)
    feed = Feed(worker)
    feed(*[("e", T0 + i * 1000) for i in range(4)])
    feed(("e", 7_000_000_000_000))  # year 2191: accepted (inside the range), a clock fault
    stuck = feed(*[("e", T0 + (4 + i) * 1000) for i in range(3)])
    assert stuck.late == 3, "the sensor's real readings now count as late"
    now[0] += cfg.stream.sensor_ttl_s + 61  # late readings do not refresh the sensor: it goes idle
    worker._evict_idle()
    s = feed(*[("e", T0 + (10 + i) * 1000) for i in range(4)])
    assert s.late == 0 and _ends(s) == [13], "after the TTL the sensor starts over"
