"""Where a sensor's events go: both sinks partition by the key as the Java client does (murmur2), so a sensor's
events share a partition whichever client wrote them, and kafka-python's hash kept per key changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.partitioner.default import DefaultPartitioner, murmur2

from aestream.config import Config
from aestream.kafka.kafka_python import KeyHashPartitioner, open_sink
from aestream.stream.messages import Outgoing

pytestmark = pytest.mark.integration

N_PARTITIONS = 7
KEYS = [f"pump-{i}".encode() for i in range(60)] + [b"", "vanne-\u00e9".encode(), b"x" * 300]


def _java_partition(key: bytes) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % N_PARTITIONS


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_each_key_goes_to_the_partition_the_java_client_picks(client: str, kafka_config: Config,
                                                             kafka_tools: Any) -> None:
    cfg = kafka_config.replace(kafka={"client": client})
    topic = cfg.kafka.output_topic
    admin = KafkaAdminClient(bootstrap_servers=list(cfg.kafka.bootstrap_servers))
    admin.create_topics([NewTopic(topic, N_PARTITIONS, 1)])
    admin.close()
    sink = open_sink(cfg.kafka)
    for _ in range(2):  # the second time from kafka-python's kept hashes
        for key in KEYS:
            sink.send(Outgoing(topic, b"event", key))
    sink.flush()
    sink.close()
    landed = {(m.key or b"", m.partition) for m in kafka_tools["read_all"](cfg, topic)}
    assert landed == {(key, _java_partition(key)) for key in KEYS}


class _Cluster:
    """The two calls a partitioner makes of kafka-python's cluster metadata."""

    def __init__(self, partitions: dict[str, set[int]]) -> None:
        self.partitions = partitions

    def topics(self) -> set[str]:
        return set(self.partitions)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions.get(topic)

    def available_partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions.get(topic)


def test_the_kept_hashes_pick_what_kafka_pythons_partitioner_picks_as_partitions_are_added() -> None:
    kept, default = KeyHashPartitioner(), DefaultPartitioner()
    for n in (1, 3, 7, 12, 7):  # the same keys again after the topic grew
        cluster = _Cluster({"events": set(range(n))})
        for key in KEYS:
            assert (kept.partition("events", None, key, None, b"v", cluster)
                    == default.partition("events", None, key, None, b"v", cluster))
    cluster = _Cluster({"events": {0, 1, 2}})
    assert {kept.partition("events", None, None, None, b"v", cluster) for _ in range(200)} == {0, 1, 2}
    with pytest.raises(ValueError, match="not found"):
        kept.partition("other", None, b"pump-1", None, b"v", cluster)
