"""Per-sensor baselines on the real broker: written to the group's compacted changelog before the offsets they
reflect are committed, and restored by the partition's next owner before its first record."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from aestream.app import build_app, changelog_topic
from aestream.commands.simulate import Plant
from aestream.config import Config
from aestream.detect.baselines import Baseline
from aestream.errors import ConfigError
from aestream.kafka.changelog import KafkaChangelog
from aestream.kafka.kafka_python import client_options, ensure_topics
from aestream.kafka.refusals import MAX_STATE_BYTES
from aestream.models.store import ModelStore
from aestream.stream.codec import encode_reading
from aestream.training.build import train_bundle

pytestmark = pytest.mark.integration

START_MS = 1_767_225_600_000
OFFSETS = {"sensor-00": 0.0, "sensor-01": 20.0, "sensor-02": -15.0}  # operating points far apart


def _messages(plant: Plant, steps: int, step0: int = 0, anomalies: Any = ()) -> list[tuple[bytes, bytes]]:
    readings = plant.readings(steps, START_MS + step0 * plant.period_ms, list(anomalies), step0=step0)
    return [(s.encode(), encode_reading(s, ts, [v + OFFSETS[s] * (1 + j) for j, v in enumerate(vals)]))
            for s, ts, vals in readings]


@pytest.mark.parametrize("mode", ["shared", "finetune"])
def test_a_restarted_worker_restores_its_baselines_and_judges_at_once(
        topics: Config, kafka_tools: dict[str, Any], train_small: Any, mode: str) -> None:
    cfg = topics.replace(stream={"stride": 1},
                         baselines={"mode": mode, "n_readings": 150, "finetune_blocking": True, "finetune_epochs": 5},
                         threshold={"quantile": 0.99, "factor": 1.5, "k": 1, "n": 1})
    ModelStore(cfg.paths.model_dir).publish(train_small(cfg))
    plant = Plant(3, cfg.stream.channels, seed=0)
    plant.signal(800)  # the draws train_small made: the plant as it was trained, at three operating points
    kafka_tools["produce"](cfg, _messages(plant, 200))
    first = kafka_tools["make_worker"](cfg)
    kafka_tools["run_until_idle"](first)
    assert first.totals.calibrating == 0 and first.totals.events == 0
    made = {s: b.to_json() for s, b in first.baselines.ready.items()}  # type: ignore[union-attr]
    assert sorted(made) == sorted(OFFSETS)

    log = {m.key.decode(): m for m in kafka_tools["read_all"](cfg, changelog_topic(cfg))}
    assert {k: m.value for k, m in log.items()} == made  # every baseline, as made, before the commit
    assert {m.headers["aestream.source.topic"] for m in log.values()} == {cfg.kafka.input_topics[0].encode()}
    own = [json.loads(m.value).get("model") is not None for m in log.values()]
    assert all(own) if mode == "finetune" else not any(own)
    admin = KafkaAdminClient(bootstrap_servers=list(cfg.kafka.bootstrap_servers))
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, changelog_topic(cfg))])
        topic = described["topic"][changelog_topic(cfg)]
        assert topic["cleanup.policy"]["value"] == "compact"
        assert topic["max.message.bytes"]["value"] == str(MAX_STATE_BYTES)
    finally:
        admin.close()

    # a new owner: 100 more readings with a shift on sensor-01 — fewer than a calibration needs, so any event
    # there comes from a restored baseline
    kafka_tools["produce"](cfg, _messages(plant, 100, step0=200, anomalies=[(1, "shift", 240, 40)]))
    second = kafka_tools["make_worker"](cfg)
    kafka_tools["run_until_idle"](second)
    restored = second.baselines.ready  # type: ignore[union-attr]
    assert {s: b.to_json() for s, b in restored.items()} == made
    assert second.totals.calibrating == 0
    events = [json.loads(m.value) for m in kafka_tools["read_all"](cfg, cfg.kafka.output_topic)]
    assert {e["sensor"] for e in events} == {"sensor-01"}
    assert {e["threshold"] for e in events} == {round(Baseline.from_json(made["sensor-01"]).threshold, 6)}


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_a_fine_tuned_model_above_a_megabyte_goes_through_the_changelog(
        topics: Config, kafka_tools: dict[str, Any], client: str) -> None:
    """A sensor's own model grows with window × channels × hidden size (an MLP family at 256 × 8 is ~1.4 MB as
    JSON): above the clients' and the broker's 1 MB defaults it was refused and dead-lettered, and the partition's
    next owner calibrated the sensor again."""
    cfg = topics.replace(kafka={"client": client}, stream={"stride": 4},
                         baselines={"mode": "finetune", "n_readings": 150, "finetune_blocking": True,
                                    "finetune_epochs": 1})
    plant = Plant(3, cfg.stream.channels, seed=0)
    big = cfg.replace(model={"family": "vanilla", "epochs": 2, "hidden_size": 3072, "latent_size": 6,
                             "torch_threads": 1, "device": "cpu", "input_smoothing": 1}).model
    ModelStore(cfg.paths.model_dir).publish(train_bundle(list(plant.signal(400)), cfg.stream, big, cfg.threshold))
    kafka_tools["produce"](cfg, _messages(plant, 200))
    first = kafka_tools["make_worker"](cfg)
    kafka_tools["run_until_idle"](first)
    made = {s: b.to_json() for s, b in first.baselines.ready.items()}  # type: ignore[union-attr]
    assert sorted(made) == sorted(OFFSETS) and all(b.scorer is not None for b in first.baselines.ready.values())
    assert min(map(len, made.values())) > 1_500_000
    assert first.totals.dead_letters == 0 and not kafka_tools["read_all"](cfg, cfg.kafka.dead_letter_topic)
    log = {m.key.decode(): m.value for m in kafka_tools["read_all"](cfg, changelog_topic(cfg))}
    assert log == made

    second = kafka_tools["make_worker"](cfg)  # the next owner restores them before its first record
    kafka_tools["produce"](cfg, _messages(plant, 20, step0=200))
    kafka_tools["run_until_idle"](second)
    assert {s: b.to_json() for s, b in second.baselines.ready.items()} == made  # type: ignore[union-attr]
    assert second.totals.calibrating == 0


def test_a_baselines_changelog_made_before_with_the_brokers_1_mb_limit_is_named_with_the_fix(
        topics: Config, caplog: pytest.LogCaptureFixture) -> None:
    topic = changelog_topic(topics)
    admin = KafkaAdminClient(bootstrap_servers=list(topics.kafka.bootstrap_servers))
    try:
        admin.create_topics([NewTopic(topic, 2, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        admin.close()
    with caplog.at_level(logging.WARNING, logger="aestream.kafka.changelog"):
        KafkaChangelog(topics.kafka, topic).restore([(topics.kafka.input_topics[0], 0)])  # small records: fine
        assert not [r for r in caplog.records if r.name == "aestream.kafka.changelog"]
        KafkaChangelog(topics.kafka, topic, large=True).restore([(topics.kafka.input_topics[0], 0)])
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "aestream.kafka.changelog"]
    assert f"--entity-name {topic} --add-config max.message.bytes={MAX_STATE_BYTES}" in warning


def test_a_partition_added_to_the_input_topic_while_running_is_restored_from_a_grown_changelog(
        topics: Config) -> None:
    (source,) = topics.kafka.input_topics  # 2 partitions
    changelog = KafkaChangelog(topics.kafka, changelog_topic(topics), timeout_s=10.0)
    assert changelog.restore([(source, 0)]) == {}  # made with the input's 2 partitions
    admin = KafkaAdminClient(bootstrap_servers=list(topics.kafka.bootstrap_servers))
    try:
        admin.create_partitions({source: 3})
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=list(topics.kafka.bootstrap_servers))
    try:
        deadline = time.monotonic() + 30
        while len(consumer.partitions_for_topic(source) or ()) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
            consumer.topics()  # a metadata refresh
    finally:
        consumer.close()
    # the same (running) worker's changelog is given the new partition: it used to wait 10 s and raise
    assert changelog.restore([(source, 2)]) == {}


def test_a_changelog_partition_shared_by_two_input_topics_restores_each_topics_keys_apart(
        kafka_config: Config) -> None:
    from aestream.kafka.kafka_python import ensure_topics, open_sink

    first, second = kafka_config.kafka.input_topics[0], f"{kafka_config.kafka.input_topics[0]}-b"
    cfg = kafka_config.replace(kafka={"input_topics": (first, second)})
    ensure_topics(cfg.kafka, {first: 1, second: 1})
    changelog = KafkaChangelog(cfg.kafka, changelog_topic(cfg), timeout_s=10.0)
    changelog.ensure()
    sink = open_sink(cfg.kafka)
    try:  # both topics' partition 0 write to the changelog's partition 0
        sink.send(changelog.record((first, 0), "pump-1", b"state of pump-1"))
        sink.send(changelog.record((second, 0), "fan-1", b"state of fan-1"))
        sink.flush(30)
    finally:
        sink.close()
    assert changelog.restore([(first, 0)]) == {(first, 0): {"pump-1": b"state of pump-1"}}
    assert changelog.restore([(first, 0), (second, 0)]) == {(first, 0): {"pump-1": b"state of pump-1"},
                                                           (second, 0): {"fan-1": b"state of fan-1"}}


def test_a_changelog_made_before_without_compaction_is_refused_at_start_with_the_fix(
        kafka_config: Config, train_small: Any) -> None:
    """A changelog made by hand with cleanup.policy=delete would lose every sensor's state after retention.ms."""
    cfg = kafka_config.replace(baselines={"mode": "shared"})
    ModelStore(cfg.paths.model_dir).publish(train_small(cfg, epochs=2))
    ensure_topics(cfg.kafka, {cfg.kafka.input_topics[0]: 2})
    topic = changelog_topic(cfg)
    admin = KafkaAdminClient(**client_options(cfg.kafka))
    try:
        admin.create_topics([NewTopic(topic, 2, 1, topic_configs={"cleanup.policy": "delete"})])
    finally:
        admin.close()
    with pytest.raises(ConfigError, match=f"{topic} has cleanup.policy=delete.*cleanup.policy=compact"):
        build_app(cfg)
