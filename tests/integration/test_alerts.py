"""Alert episodes end to end on the real broker: one episode per incident, cooldown, schema, another Kafka client,
restart in the middle of an episode."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from aestream.alerts import AlertStage, build_alert_stage
from aestream.commands.simulate import Plant
from aestream.config import Config
from aestream.kafka.kafka_python import ensure_topics
from aestream.models.store import ModelStore
from aestream.stream.codec import encode_reading

pytestmark = pytest.mark.integration

START_MS = 1_767_225_600_000
SCHEMAS = Path(__file__).resolve().parents[2] / "aestream" / "schemas"
SUSTAINED = (2, "shift", 900, 800)  # sensor-02: 800 readings = 200 windows (stride 4) of anomaly
FLAPPING = [(1, "shift", 900, 60), (1, "shift", 1040, 40), (1, "shift", 1160, 40)]  # gaps of 20+ windows


def _config(topics: Config, **alerts: Any) -> Config:
    out = topics.kafka.output_topic
    cfg = topics.replace(
        threshold={"quantile": 0.999, "factor": 1.5, "k": 2, "n": 3},
        alerts={"enabled": True, "topic": f"{out}-alerts", "n_resolve_windows": 5, "cooldown_ms": 600_000,
                "bands": {"warning": 1.0, "critical": 4.0, "emergency": 16.0}, **alerts})
    ensure_topics(cfg.kafka, {cfg.alerts.topic: 1})
    return cfg


def _messages(cfg: Config, steps: int, anomalies: list[tuple[int, str, int, int]]) -> list[tuple[bytes, bytes]]:
    plant = Plant(4, cfg.stream.channels, seed=0)
    plant.signal(800)  # the same draw order as the training data of train_small
    return [(s.encode(), encode_reading(s, ts, v))
            for s, ts, v in plant.readings(steps, START_MS, anomalies, step0=800)]


def _run(cfg: Config, kafka_tools: dict[str, Any], **kwargs: Any) -> tuple[Any, AlertStage]:
    stage = build_alert_stage(cfg)
    assert stage is not None
    worker = kafka_tools["make_worker"](cfg, stages=[stage], **kwargs)
    return worker, stage


def _alerts(cfg: Config, kafka_tools: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(m.value) for m in kafka_tools["read_all"](cfg, cfg.alerts.topic)]


def _kinds(events: list[dict[str, Any]], sensor: str) -> list[str]:
    return [e["type"] for e in events if e["sensor"] == sensor]


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_a_sustained_anomaly_is_one_episode_and_flapping_in_the_cooldown_opens_no_second(
        topics: Config, kafka_tools: dict[str, Any], train_small: Any) -> None:
    cfg = _config(topics)
    ModelStore(cfg.paths.model_dir).publish(train_small(cfg))
    kafka_tools["produce"](cfg, _messages(cfg, 1100, [SUSTAINED, *FLAPPING]))
    worker, stage = _run(cfg, kafka_tools)
    kafka_tools["run_until_idle"](worker)
    stage.close()

    events = _alerts(cfg, kafka_tools)
    raw = [json.loads(m.value) for m in kafka_tools["read_all"](cfg, cfg.kafka.output_topic)]
    sustained = _kinds(events, "sensor-02")
    print(f"sensor-02 {sustained}, sensor-01 {_kinds(events, 'sensor-01')}, raw {len(raw)}, counts {stage.counts}")
    assert sustained.count("opened") == 1 and sustained.count("resolved") == 1, sustained
    assert sustained.count("updated") <= 3 and sustained[0] == "opened" and sustained[-1] == "resolved"
    assert len({e["episode_id"] for e in events if e["sensor"] == "sensor-02"}) == 1
    assert sum(e["sensor"] == "sensor-02" for e in raw) >= 150, "the raw events should cover the 200 windows"
    flapping = _kinds(events, "sensor-01")
    assert flapping.count("opened") == 1, flapping  # the later bursts fall inside the cooldown
    assert stage.tracker.n_suppressed("sensor-01") > 0
    assert len(_kinds(events, "sensor-00") + _kinds(events, "sensor-03")) <= 2, "false alarms on normal sensors"

    alert_schema, anomaly_schema = _validator("alert-event.v1.json"), _validator("anomaly-event.v1.json")
    for e in events:
        alert_schema.validate(e)
    for e in raw:
        anomaly_schema.validate(e)
    opened = next(e for e in events if e["sensor"] == "sensor-02")
    assert opened["window_end_ms"] >= START_MS + 900_000 and opened["model_version"] == "v0001"
    assert opened["channels"] and abs(sum(c["share"] for c in opened["channels"]) - 1.0) <= 1.0


def test_another_kafka_client_reads_the_alert_events(
        topics: Config, kafka_tools: dict[str, Any], train_small: Any) -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka", reason="pip install confluent-kafka (dev extra)")
    cfg = _config(topics)
    bundle = train_small(cfg)
    bundle.threshold = 1e-9  # every window alarms: one episode per sensor
    ModelStore(cfg.paths.model_dir).publish(bundle)
    kafka_tools["produce"](cfg, _messages(cfg, 60, []))
    worker, stage = _run(cfg, kafka_tools)
    kafka_tools["run_until_idle"](worker)
    stage.close()

    consumer = confluent_kafka.Consumer({"bootstrap.servers": ",".join(cfg.kafka.bootstrap_servers),
                                         "group.id": f"{cfg.kafka.group_id}-confluent",
                                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([cfg.alerts.topic])
    got: list[tuple[bytes, dict[str, Any], dict[str, bytes]]] = []
    deadline = time.monotonic() + 30
    while len(got) < 4 and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            got.append((m.key(), json.loads(m.value()), dict(m.headers() or [])))
    consumer.close()
    assert sorted(k for k, _, _ in got) == [f"sensor-0{i}".encode() for i in range(4)]
    v = _validator("alert-event.v1.json")
    for key, e, headers in got:
        v.validate(e)
        assert e["type"] == "opened" and e["sensor"].encode() == key and headers["aestream.alert.type"] == b"opened"
    assert got[0][1] in _alerts(cfg, kafka_tools)


@pytest.mark.parametrize("rebuild", ["state file", "replayed lookback"])
def test_a_worker_restarted_in_the_middle_of_an_episode_does_not_open_it_again(
        rebuild: str, topics: Config, kafka_tools: dict[str, Any], train_small: Any) -> None:
    cfg = _config(topics).replace(kafka={"max_poll_records": 100, "rebuild_lookback_messages":
                                         0 if rebuild == "state file" else 5000})
    ModelStore(cfg.paths.model_dir).publish(train_small(cfg))
    messages = _messages(cfg, 1100, [SUSTAINED])
    kafka_tools["produce"](cfg, messages)

    first, stage = _run(cfg, kafka_tools)

    def stop_inside_the_episode(event: dict[str, Any]) -> None:
        if event["sensor"] == "sensor-02" and first.totals.events >= 40:
            first.stop()

    first.on_event = stop_inside_the_episode
    kafka_tools["run_until_idle"](first)
    stage.close()
    assert 0 < first.totals.readings < len(messages), "the first worker should stop midway"
    assert _kinds(_alerts(cfg, kafka_tools), "sensor-02") == ["opened"], "stopped before the episode opened"
    state = Path(cfg.paths.state_dir) / cfg.alerts.state_file
    if rebuild == "replayed lookback":
        state.unlink()

    second, stage2 = _run(cfg, kafka_tools)
    kafka_tools["run_until_idle"](second)
    stage2.close()
    events = _alerts(cfg, kafka_tools)
    kinds = _kinds(events, "sensor-02")
    assert kinds.count("opened") == 1 and kinds[-1] == "resolved" and kinds.count("resolved") == 1, kinds
    assert len({e["episode_id"] for e in events if e["sensor"] == "sensor-02"}) == 1
    if rebuild == "replayed lookback":
        assert second.totals.replayed > 0


def test_the_alert_state_follows_the_partition_through_the_changelog(
        topics: Config, kafka_tools: dict[str, Any], train_small: Any) -> None:
    """No lookback and no state file: only the group's alerts changelog can tell the next worker that the episode
    is open. It must not open it again, and must resolve it."""
    from aestream.app import build_app, changelog_topic

    cfg = _config(topics).replace(kafka={"max_poll_records": 100, "rebuild_lookback_messages": 0},
                                  ops={"metrics_enabled": False})
    ModelStore(cfg.paths.model_dir).publish(train_small(cfg))
    messages = _messages(cfg, 1100, [SUSTAINED])
    kafka_tools["produce"](cfg, messages)

    first = build_app(cfg).worker
    assert first.changelog is None and any(isinstance(s, AlertStage) and s.changelog for s in first.stages)

    def stop_inside_the_episode(event: dict[str, Any]) -> None:
        if event["sensor"] == "sensor-02" and first.totals.events >= 40:
            first.stop()

    first.on_event = stop_inside_the_episode
    kafka_tools["run_until_idle"](first)
    assert 0 < first.totals.readings < len(messages), "the first worker should stop midway"
    assert _kinds(_alerts(cfg, kafka_tools), "sensor-02") == ["opened"], "stopped before the episode opened"
    assert not (Path(cfg.paths.state_dir) / cfg.alerts.state_file).exists()  # no file shared between processes
    logged = {m.key.decode(): json.loads(m.value) for m in kafka_tools["read_all"](cfg, changelog_topic(cfg, "alerts"))}
    assert logged["sensor-02"]["episode"]["open"] is not None

    second = build_app(cfg).worker
    kafka_tools["run_until_idle"](second)
    events = _alerts(cfg, kafka_tools)
    kinds = _kinds(events, "sensor-02")
    assert kinds.count("opened") == 1 and kinds[-1] == "resolved" and kinds.count("resolved") == 1, kinds
    assert len({e["episode_id"] for e in events if e["sensor"] == "sensor-02"}) == 1
    assert second.totals.replayed == 0
