"""A reading far ahead of its record's timestamp (or of this host's clock) is dead-lettered with that reason instead
of becoming its sensor's newest reading, after which every real reading would be dropped as late."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from aestream.config import Config
from aestream.stream.codec import encode_reading
from aestream.stream.messages import Record
from aestream.worker import Worker

CHANNELS = ("temperature", "pressure", "vibration", "current")
T0 = 1_767_225_600_000
YEAR_MS = 365 * 86_400_000


def _single(offset: int, sensor: str, ts: int, record_ts: int) -> Record:
    return Record("in", 0, offset, sensor.encode(), encode_reading(sensor, ts, [1.0, 2, 3, 4]), record_ts)


def _polls(shape: str, record_ts: Any) -> list[list[Record]]:
    """Sensor ``s``: ten readings a second apart, one a year ahead, ten more; sensor ``t`` beside it throughout.
    ``record_ts(ts)`` is the record timestamp of a reading at ``ts``."""
    stamps = [T0 + 1000 * i for i in range(10)] + [T0 + 10_000 + YEAR_MS] + [T0 + 1000 * i for i in range(11, 21)]
    if shape == "columns":  # single-reading messages only: the column-wise path
        recs = [_single(2 * i + k, sensor, ts if sensor == "s" else T0 + 1000 * i, record_ts(T0 + 1000 * i))
                for i, ts in enumerate(stamps) for k, sensor in enumerate("st")]
        return [recs[:30], recs[30:]]
    # batched messages, one per sensor and second: the message-by-message path
    docs = [[{"sensor": "s", "ts": ts, "values": [1, 2, 3, 4]},
             {"sensor": "t", "ts": T0 + 1000 * i, "values": [1, 2, 3, 4]}] for i, ts in enumerate(stamps)]
    recs = [Record("in", 0, i, b"s", json.dumps(d).encode(), record_ts(T0 + 1000 * i)) for i, d in enumerate(docs)]
    return [recs[:15], recs[15:]]


def _windows(shape: str) -> int:
    return (20 - 3) + (21 - 3 if shape == "columns" else 20 - 3)


def _run(polls: list[list[Record]], scripted_source: Any, recording_sink: Any, bundle: Any, one_model: Any,
         **worker: Any) -> tuple[Worker, list[Any]]:
    cfg = Config().replace(baselines={"mode": "off"}, stream={"channels": CHANNELS, "window_size": 4, "stride": 1})
    sink = recording_sink()
    w = Worker(cfg, scripted_source(polls), sink, one_model(bundle), clock=lambda: 0.0, **worker)
    w.refresh_model(force=True)
    for _ in range(len(polls)):
        w.step()
    return w, [m for m in sink.sent if m.topic == cfg.kafka.dead_letter_topic]


@pytest.fixture()
def bundle(train_small: Any) -> Any:
    return train_small(Config().replace(baselines={"mode": "off"}, stream={"channels": CHANNELS, "window_size": 4}))


@pytest.mark.parametrize("shape", ["columns", "batches"])
def test_a_reading_a_year_ahead_of_its_record_is_dead_lettered_and_its_sensor_keeps_its_windows(
        shape: str, scripted_source: Any, recording_sink: Any, bundle: Any, one_model: Any) -> None:
    w, dead = _run(_polls(shape, lambda ts: ts + 50), scripted_source, recording_sink, bundle, one_model)
    assert w.totals.late == 0, "the readings after the far-future one were dropped as late"
    (dl,) = dead
    reason = dict(dl.headers)["aestream.reason"].decode()
    assert "ahead of its record's timestamp" in reason and "stream.max_future_ms = 300000" in reason
    assert dict(dl.headers)["aestream.source.offset"] == (b"20" if shape == "columns" else b"10")
    # both sensors close a window on each of their readings from the 4th on; the refused ones close none (a
    # batched message is refused as a whole: there, t loses its reading of that second too)
    assert w.totals.windows == _windows(shape)
    assert w.totals.dead_letters == 1 and w.totals.rejected == {"future": 1}


@pytest.mark.parametrize("shape", ["columns", "batches"])
def test_without_a_record_timestamp_the_wall_clock_bounds_event_time(
        shape: str, scripted_source: Any, recording_sink: Any, bundle: Any, one_model: Any) -> None:
    wall_s = (T0 + 60_000) / 1000  # the host's clock: a minute after the first reading
    w, dead = _run(_polls(shape, lambda ts: -1), scripted_source, recording_sink, bundle, one_model,
                   wall_clock=lambda: wall_s)
    (dl,) = dead
    assert "ahead of this host's clock" in dict(dl.headers)["aestream.reason"].decode()
    assert w.totals.late == 0 and w.totals.windows == _windows(shape)


def test_max_future_ms_0_turns_the_bound_off(scripted_source: Any, recording_sink: Any, bundle: Any,
                                             one_model: Any) -> None:
    cfg = Config().replace(baselines={"mode": "off"},
                           stream={"channels": CHANNELS, "window_size": 4, "stride": 1, "max_future_ms": 0})
    polls = _polls("columns", lambda ts: ts)
    w = Worker(cfg, scripted_source(polls), recording_sink(), one_model(bundle), clock=lambda: 0.0)
    w.refresh_model(force=True)
    w.step(), w.step()
    assert w.totals.dead_letters == 0 and w.totals.late == 10  # the documented price of turning it off


def test_a_sensor_dropping_many_late_readings_says_so_once_per_period(
        scripted_source: Any, recording_sink: Any, bundle: Any, one_model: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    cfg = Config().replace(baselines={"mode": "off"},
                           stream={"channels": CHANNELS, "window_size": 4, "stride": 1, "n_late_report": 5})
    now = [0.0]
    fresh = [_single(i, "s", T0 + 1000 * i, T0 + 1000 * i) for i in range(10)]
    stale = [_single(10 + i, "s", T0 + 1000 * (i % 3), T0 + 20_000) for i in range(12)]
    polls = [fresh, stale[:6], stale[6:], [_single(22, "q", T0, T0)]]
    worker = Worker(cfg, scripted_source(polls), recording_sink(), one_model(bundle), clock=lambda: now[0])
    worker.refresh_model(force=True)
    with caplog.at_level(logging.WARNING, logger="aestream.worker"):
        for t in (0.0, 1.0, 2.0, 70.0):
            now[0] = t
            worker.step()
    lines = [r.getMessage() for r in caplog.records if "late" in r.getMessage()]
    assert len(lines) == 1, lines  # 6 then 6 more in the same minute: one line
    assert "sensor s dropped 6 late readings" in lines[0] and "stream.n_late_report" in lines[0]
    assert worker.totals.late == 12


@pytest.mark.parametrize("shape", ["columns", "long run", "batched"])
def test_late_readings_read_again_in_a_replay_are_neither_counted_nor_reported_again(
        shape: str, scripted_source: Any, recording_sink: Any, bundle: Any, one_model: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    cfg = Config().replace(baselines={"mode": "off"},
                           stream={"channels": CHANNELS, "window_size": 4, "stride": 1, "n_late_report": 5})
    n = 200 if shape == "long run" else 10  # the column-wise path cuts a sensor's runs of 128 or more at once
    stamps = [T0 + 1000 * i for i in range(n)] + [T0 + 1000 * i for i in range(6)]  # 6 duplicates: late
    if shape == "batched":
        doc = [{"sensor": "s", "ts": ts, "values": [1, 2, 3, 4]} for ts in stamps]
        recs = [Record("in", 0, 0, b"s", json.dumps(doc).encode(), T0)]
    else:
        recs = [_single(i, "s", ts, ts) for i, ts in enumerate(stamps)]

    def run(replay: bool, n_replayed: int | None = None) -> Worker:
        polls = [[r._replace(replay=replay and (n_replayed is None or i < n_replayed)) for i, r in enumerate(recs)]]
        worker = Worker(cfg, scripted_source(polls), recording_sink(), one_model(bundle), clock=lambda: 0.0)
        worker.refresh_model(force=True)
        worker.step()
        return worker

    with caplog.at_level(logging.WARNING, logger="aestream.worker"):
        assert run(replay=False).totals.late == 6
        assert len([r for r in caplog.records if "late readings" in r.getMessage()]) == 1
        caplog.clear()
        assert run(replay=True).totals.late == 0, "a partition's next owner counted its lookback's late readings"
        assert not [r for r in caplog.records if "late readings" in r.getMessage()]
        if shape != "batched":  # the poll that ends the replay: its live part's late readings count
            assert run(replay=True, n_replayed=n // 2).totals.late == 6
