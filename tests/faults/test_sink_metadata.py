"""kafka-python's producer needs a topic's metadata before it queues a message for it: a send to a topic it has
not sent to yet blocks up to ``max_block_ms`` (60 s) for it, and a send to a partition its metadata does not list
raises. The sink learns the worker's topics when it opens, so a first dead letter or alert while the broker is away
is queued (and delivered when it is back), and learns a partition added since, so a grown changelog takes the
state of a new partition at once."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from aestream.app import build_app, changelog_topic
from aestream.config import Config
from aestream.kafka.kafka_python import client_options, ensure_topics, open_sink
from aestream.models.store import ModelStore
from aestream.stream.messages import Outgoing

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.xdist_group("processes")]


def _cfg(bootstrap: str) -> Config:
    run = uuid.uuid4().hex[:10]
    return Config().replace(kafka={"bootstrap_servers": (bootstrap,), "output_topic": f"out-{run}",
                                   "dead_letter_topic": f"dlq-{run}"})


def _values(cfg: Config, topic: str, partition: int, n: int) -> list[bytes]:
    tp = TopicPartition(topic, partition)
    consumer = KafkaConsumer(**client_options(cfg.kafka), enable_auto_commit=False, consumer_timeout_ms=5000)
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        got: list[bytes] = []
        for rec in consumer:
            got.append(rec.value)
            if len(got) >= n:
                break
        return got
    finally:
        consumer.close()


def test_a_first_send_to_a_known_topic_while_the_broker_is_away_is_queued_and_delivered(
        private_broker: Any) -> None:
    cfg = _cfg(private_broker.bootstrap)
    k = cfg.kafka
    ensure_topics(k, {k.output_topic: 1, k.dead_letter_topic: 1})
    sink = open_sink(k, topics=(k.output_topic, k.dead_letter_topic))
    try:
        sink.send(Outgoing(k.output_topic, b"event", b"s"))
        sink.flush(30)
        private_broker.stop()
        began = time.monotonic()
        sink.send(Outgoing(k.dead_letter_topic, b"dead letter", b"s"))  # never sent to before the outage
        queued_s = time.monotonic() - began
        private_broker.restart()
        sink.flush(60)
    finally:
        sink.close()
    assert queued_s < 5, f"the send waited {queued_s:.1f} s for the topic's metadata"
    assert _values(cfg, k.dead_letter_topic, 0, 1) == [b"dead letter"]


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_a_send_to_a_partition_added_since_the_sink_opened_is_delivered(kafka_bootstrap: str, client: str) -> None:
    cfg = _cfg(kafka_bootstrap).replace(kafka={"client": client})
    k = cfg.kafka
    topic = f"changelog-{uuid.uuid4().hex[:10]}"
    ensure_topics(k, {topic: 1})
    sink = open_sink(k, topics=(topic,))
    try:
        sink.send(Outgoing(topic, b"state of partition 0", b"s0", partition=0))
        sink.flush(30)
        admin = KafkaAdminClient(**client_options(k))
        try:
            admin.create_partitions({topic: _new_partitions(2)})
        finally:
            admin.close()
        sink.send(Outgoing(topic, b"state of partition 1", b"s1", partition=1))
        sink.flush(30)
    finally:
        sink.close()
    assert _values(cfg, topic, 1, 1) == [b"state of partition 1"]


def _new_partitions(n: int) -> Any:
    from kafka.admin import NewPartitions

    return NewPartitions(total_count=n)


def test_the_worker_learns_every_topic_it_sends_to_at_start_and_makes_its_changelogs_compacted(
        kafka_config: Config, train_small: Any) -> None:
    run = uuid.uuid4().hex[:10]
    cfg = kafka_config.replace(
        baselines={"mode": "shared"}, streams={"latent_topic": f"latent-{run}"},
        alerts={"enabled": True, "topic": f"alerts-{run}", "dead_letter_topic": f"alerts-dlq-{run}",
                "sinks": {"critical-topic": {"type": "topic", "topic": f"critical-{run}"},
                          "unrouted": {"type": "topic", "topic": f"unrouted-{run}"},
                          "pager": {"type": "webhook", "url": "http://127.0.0.1:9/hook"}},
                "routes": [{"severity": "critical", "sinks": ["critical-topic", "pager"]}]})
    k = cfg.kafka
    ModelStore(cfg.paths.model_dir).publish(train_small(cfg, epochs=2))
    app = build_app(cfg)
    try:
        producer = app.worker.sink.producer  # type: ignore[attr-defined]
        known = {t for t in producer._metadata.topics() if producer._metadata.partitions_for_topic(t)}
    finally:
        app.worker.close()
    changelogs = {changelog_topic(cfg), changelog_topic(cfg, "alerts")}
    assert known == {k.output_topic, k.dead_letter_topic, f"latent-{run}", f"alerts-{run}", f"critical-{run}",
                     f"alerts-dlq-{run}", *changelogs}  # not the topic of a sink no route reaches
    admin = KafkaAdminClient(**client_options(k))
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t, configs=["cleanup.policy"])
                                            for t in sorted(changelogs)])
    finally:
        admin.close()
    assert {t: v["cleanup.policy"]["value"] for t, v in described["topic"].items()} == dict.fromkeys(
        changelogs, "compact")
