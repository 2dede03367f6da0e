"""Both Kafka sources commit without waiting on the real broker: the answer comes back through a later poll, the
offsets and their metadata are committed, and metadata the broker refuses as too large fails that commit only."""

from __future__ import annotations

from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from aestream.config import Config
from aestream.kafka.kafka_python import open_source
from aestream.kafka.protocols import AsyncCommitSource
from aestream.stream.codec import encode_reading
from aestream.stream.messages import Partition

pytestmark = pytest.mark.integration


def _committed(cfg: Config, part: Partition) -> tuple[int, str] | None:
    consumer = KafkaConsumer(bootstrap_servers=list(cfg.kafka.bootstrap_servers), group_id=cfg.kafka.group_id,
                             enable_auto_commit=False)
    try:
        found = consumer.committed(TopicPartition(*part), metadata=True)
        # librdkafka commits a metadata string with its C terminator (as a synchronous commit does)
        return None if found is None else (found.offset, found.metadata.rstrip("\x00"))
    finally:
        consumer.close(autocommit=False)


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_a_commit_sent_without_waiting_is_answered_through_a_later_poll(
        client: str, topics: Config, kafka_tools: dict[str, Any]) -> None:
    cfg = topics.replace(kafka={"client": client})
    kafka_tools["produce"](cfg, [(b"s", encode_reading("s", 1_767_225_600_000 + i, [1.0, 2, 3, 4]))
                                 for i in range(10)])
    source = open_source(cfg.kafka)
    answers: list[tuple[dict[Partition, int], bool]] = []

    def until_answered(n: int) -> None:
        for _ in range(100):
            if len(answers) >= n:
                return
            source.poll(timeout_ms=100)
        raise AssertionError(f"{len(answers)} answers of {n}")

    try:
        assert isinstance(source, AsyncCommitSource)
        records = kafka_tools["poll_records"](source, 10)
        part = (records[0].topic, records[0].partition)
        source.commit_async({part: 3}, {part: "phases"}, lambda offsets, ok: answers.append((offsets, ok)))
        until_answered(1)
        assert answers == [({part: 3}, True)]
        assert _committed(cfg, part) == (3, "phases")

        source.commit_async({part: 5}, {part: "x" * 5000}, lambda offsets, ok: answers.append((offsets, ok)))
        until_answered(2)  # over offset.metadata.max.bytes (4096): refused, and said so
        assert answers[1] == ({part: 5}, False)
        assert _committed(cfg, part) == (3, "phases")
        source.commit_async({part: 5}, {part: "fits"}, lambda offsets, ok: answers.append((offsets, ok)))
        until_answered(3)  # from then on without metadata
        assert answers[2] == ({part: 5}, True)
        assert _committed(cfg, part) == (5, "")

        source.commit_async({("not-ours", 0): 7}, None, lambda offsets, ok: answers.append((offsets, ok)))
        assert answers[3] == ({("not-ours", 0): 7}, True), "a partition not ours has nothing to wait for"
    finally:
        source.close()
