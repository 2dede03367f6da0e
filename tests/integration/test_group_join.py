"""A worker joins its consumer group only when it polls: one waiting for its first model (no poll) holds no
partition, so the others in the group read them all (librdkafka would join in the background at subscribe and hold
its share, unread, and stall the group's rebalances until max.poll.interval.ms)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aestream.app import build_app
from aestream.config import Config
from aestream.kafka.kafka_python import ensure_topics, open_source

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_a_worker_waiting_for_its_first_model_leaves_every_partition_to_the_group(
        kafka_config: Config, tmp_path: Path, client: str) -> None:
    cfg = kafka_config.replace(kafka={"client": client}, paths={"model_dir": str(tmp_path / "no-models")})
    ensure_topics(cfg.kafka, {cfg.kafka.input_topics[0]: 2})
    waiting = build_app(cfg, model_check_interval_s=0.2).worker
    other = open_source(cfg.kafka)
    try:
        waiting.step()  # no model: no poll
        deadline = time.monotonic() + 30
        while len(other.assignment()) < 2 and time.monotonic() < deadline:
            other.poll(timeout_ms=200)
            waiting.step()
        assert other.assignment() == {(cfg.kafka.input_topics[0], 0), (cfg.kafka.input_topics[0], 1)}
        assert waiting.bundle is None
    finally:
        other.close()
        waiting.close()


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_a_partition_added_to_the_input_topic_is_read_within_seconds(kafka_config: Config, client: str) -> None:
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewPartitions

    cfg = kafka_config.replace(kafka={"client": client, "rebuild_lookback_messages": 0})
    topic = cfg.kafka.input_topics[0]
    ensure_topics(cfg.kafka, {topic: 1})
    source = open_source(cfg.kafka)
    try:
        deadline = time.monotonic() + 30
        while not source.assignment() and time.monotonic() < deadline:
            source.poll(timeout_ms=100)
        admin = KafkaAdminClient(bootstrap_servers=list(cfg.kafka.bootstrap_servers))
        try:
            admin.create_partitions({topic: NewPartitions(total_count=2)})
        finally:
            admin.close()
        producer = KafkaProducer(bootstrap_servers=list(cfg.kafka.bootstrap_servers))
        producer.send(topic, b"{}", key=b"s", partition=1).get(30)
        producer.close()
        added, deadline = [], time.monotonic() + 30  # librdkafka's own metadata refresh: every 5 minutes
        while not added and time.monotonic() < deadline:
            added = [r for r in source.poll(timeout_ms=100) if r.partition == 1]
        assert added, f"the added partition was not read within 30 s (assigned: {sorted(source.assignment())})"
    finally:
        source.close()
