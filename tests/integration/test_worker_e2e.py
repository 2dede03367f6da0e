"""The worker end to end on the real broker: events, dead letters, clean restart."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from aestream.commands.simulate import Plant
from aestream.config import Config
from aestream.kafka.kafka_python import open_source
from aestream.models.store import ModelStore
from aestream.stream.codec import encode_reading

pytestmark = pytest.mark.integration

START_MS = 1_767_225_600_000


def _stream(cfg: Config, steps: int, anomalies: list[tuple[int, str, int, int]], seed: int = 0) -> tuple[
        Plant, list[tuple[bytes, bytes]]]:
    plant = Plant(4, cfg.stream.channels, seed=seed)
    plant.signal(800)  # the same draw order as the training data of train_small
    readings = plant.readings(steps, START_MS, anomalies, step0=800)
    return plant, [(s.encode(), encode_reading(s, ts, v)) for s, ts, v in readings]


def test_only_the_anomalous_sensor_gets_events_covering_the_injected_time(
        topics: Config, kafka_tools: dict[str, Any], train_small: Any) -> None:
    cfg = topics.replace(threshold={"quantile": 0.999, "factor": 1.5, "k": 2, "n": 3})
    ModelStore(cfg.paths.model_dir).publish(train_small(cfg))
    plant, messages = _stream(cfg, 400, [(2, "shift", 1000, 60)])
    kafka_tools["produce"](cfg, messages)
    worker = kafka_tools["make_worker"](cfg)
    kafka_tools["run_until_idle"](worker)

    events = [json.loads(m.value) for m in kafka_tools["read_all"](cfg, cfg.kafka.output_topic)]
    inj = plant.injected[0]
    assert worker.totals.readings == len(messages)
    assert events, "the injected anomaly produced no event"
    assert {e["sensor"] for e in events} == {inj.sensor}
    span_ms = cfg.stream.window_size * plant.period_ms
    for e in events:
        assert e["window_end_ms"] >= inj.start_ms and e["window_start_ms"] <= inj.end_ms + span_ms, e
    covered = [e for e in events if e["window_start_ms"] <= inj.start_ms + 30_000 <= e["window_end_ms"]]
    assert covered, "no event window covers the middle of the injected anomaly"
    assert all(e["model_version"] == "v0001" and e["source"]["topic"] == cfg.kafka.input_topics[0] for e in events)


POISON = {
    "not json": b"\xff\xfe not json at all",
    "missing field": b'{"sensor": "pump-1", "values": [1, 2, 3, 4]}',
    "NaN value": b'{"sensor": "pump-1", "ts": 1767225600000, "values": [1, NaN, 3, 4]}',
    "wrong channel count": b'{"sensor": "pump-1", "ts": 1767225600000, "values": [1, 2, 3]}',
    "unknown channel": b'{"sensor": "pump-1", "ts": 1767225600000, "values": {"temperature": 1, "pressure": 2, '
                       b'"vibration": 3, "current": 4, "humidity": 5}}',
    "oversized": b'{"sensor": "pump-1", "pad": "' + b"x" * 20_000 + b'"}',
    "wrong type": b'{"sensor": 17, "ts": 1767225600000, "values": [1, 2, 3, 4]}',
    "bad timestamp": b'{"sensor": "pump-1", "ts": "yesterday", "values": [1, 2, 3, 4]}',
}
REASONS = {
    "not json": "not JSON", "missing field": "missing field(s) ts", "NaN value": "not JSON",
    "wrong channel count": "values has 3 numbers, expected 4", "unknown channel": "unknown channel 'humidity'",
    "oversized": "exceeds stream.max_message_bytes", "wrong type": "sensor must be a non-empty string",
    "bad timestamp": "is not ISO-8601",
}


def test_poison_messages_are_dead_lettered_with_provenance_and_good_ones_still_scored(
        topics: Config, kafka_tools: dict[str, Any], train_small: Any) -> None:
    cfg = topics.replace(stream={"max_message_bytes": 10_000})
    bundle = train_small(cfg)
    bundle.threshold = 1e-9  # every window alarms: each scored window is visible as an event
    ModelStore(cfg.paths.model_dir).publish(bundle)
    poison = [(b"pump-1", v) for v in POISON.values()]
    good = [(b"pump-1", encode_reading("pump-1", START_MS + i * 1000, [1.0 + i % 3, 2.0, 3.0, 4.0]))
            for i in range(cfg.stream.window_size)]
    kafka_tools["produce"](cfg, poison + good)
    worker = kafka_tools["make_worker"](cfg)
    kafka_tools["run_until_idle"](worker)

    dead = kafka_tools["read_all"](cfg, cfg.kafka.dead_letter_topic)
    assert len(dead) == len(POISON)
    by_value = {m.value: m for m in dead}
    for kind, value in POISON.items():
        m = by_value[value]  # the original bytes, untouched
        assert REASONS[kind] in m.headers["aestream.reason"].decode(), (kind, m.headers)
        assert m.headers["aestream.source.topic"].decode() == cfg.kafka.input_topics[0]
        assert int(m.headers["aestream.source.partition"]) in (0, 1)
        assert int(m.headers["aestream.source.offset"]) >= 0
        assert m.key == b"pump-1"
    offsets = sorted(int(m.headers["aestream.source.offset"]) for m in dead)
    assert offsets == list(range(len(POISON)))  # all on pump-1's partition, in order
    events = [json.loads(m.value) for m in kafka_tools["read_all"](cfg, cfg.kafka.output_topic)]
    assert [e["window_end_ms"] for e in events] == [START_MS + (cfg.stream.window_size - 1) * 1000]


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_clean_stop_and_restart_scores_every_window_exactly_once(
        client: str, topics: Config, kafka_tools: dict[str, Any], train_small: Any) -> None:
    cfg = topics.replace(kafka={"max_poll_records": 100, "client": client})
    bundle = train_small(cfg)
    bundle.threshold = 1e-9  # every window alarms: the events are the scored windows
    ModelStore(cfg.paths.model_dir).publish(bundle)
    _, messages = _stream(cfg, 300, [])
    kafka_tools["produce"](cfg, messages)

    first = kafka_tools["make_worker"](cfg)
    stop_after = 40

    def stop_midway(event: dict[str, Any]) -> None:
        if first.totals.events + 1 >= stop_after:
            first.stop()

    first.on_event = stop_midway
    kafka_tools["run_until_idle"](first)
    assert 0 < first.totals.readings < len(messages), "the first worker should stop midway"

    second = kafka_tools["make_worker"](cfg)
    kafka_tools["run_until_idle"](second)
    events = [json.loads(m.value) for m in kafka_tools["read_all"](cfg, cfg.kafka.output_topic)]
    keys = [(e["sensor"], e["window_end_ms"]) for e in events]
    assert len(keys) == len(set(keys)), "a window was scored twice"
    w, stride = cfg.stream.window_size, cfg.stream.stride
    expected = {(f"sensor-{i:02d}", START_MS + (800 + step) * 1000)
                for i in range(4) for step in range(w - 1, 300, stride)}
    assert set(keys) == expected, f"missing {sorted(expected - set(keys))[:5]}"
    assert second.totals.replayed > 0, "the restarted worker should refill its windows from the lookback"
    assert first.totals.readings + second.totals.readings - second.totals.replayed == len(messages)


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_a_poll_returns_the_records_waiting_without_waiting_out_its_timeout(
        client: str, topics: Config, kafka_tools: dict[str, Any]) -> None:
    # librdkafka's batch consume waits its whole timeout for a full batch: at a low rate every reading waited
    # kafka.poll_timeout_ms to be read; here the timeout is long enough that a wait for a full batch cannot pass
    cfg = topics.replace(kafka={"client": client, "poll_timeout_ms": 30_000, "max_poll_records": 500})
    source = open_source(cfg.kafka)
    try:
        deadline = time.monotonic() + 60
        while not source.assignment() and time.monotonic() < deadline:
            source.poll(timeout_ms=200)  # joins the group
        assert source.assignment(), "no partitions assigned"
        kafka_tools["produce"](cfg, [(b"pump-1", encode_reading("pump-1", START_MS, [1.0, 2.0, 3.0, 4.0]))])
        t0 = time.monotonic()
        got = source.poll()  # one record waits, 499 short of a full batch
        while not got and time.monotonic() - t0 < 60:
            got = source.poll()
        waited = time.monotonic() - t0
    finally:
        source.close()
    assert [r.key for r in got] == [b"pump-1"]
    assert waited < 15, f"the poll took {waited:.1f} s: it waited out its 30 s timeout for a full batch"
