"""A count stride's window phase survives a crash on the real broker: worker A commits (its sensors' phases go in
the offset commit's metadata), emits another batch and dies before committing it; worker B of the same group
replays the lookback, restores the committed phases and reports that batch again under the same event ids."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from aestream.config import Config
from aestream.kafka.kafka_python import ensure_topics, open_sink, open_source
from aestream.models.store import ModelStore
from aestream.stream.codec import encode_reading
from aestream.stream.messages import Partition
from aestream.worker import Worker

pytestmark = pytest.mark.integration

START_MS = 1_767_225_600_000
SENSORS = [f"pump-{i}" for i in range(5)]


class _Crashable:
    """Wraps a source: commits (waiting or not) pass through until :meth:`crash`, then are lost (as in a kill
    -9)."""

    def __init__(self, source: Any) -> None:
        self.source, self.crashed = source, False
        self.committed: dict[Partition, int] = {}
        self.commit_with_metadata = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    def commit(self, offsets: dict[Partition, int], metadata: dict[Partition, str] | None = None) -> bool:
        if not self._passes(offsets, metadata):
            return True  # lost, as after a kill -9
        return bool(self.source.commit(offsets, metadata))

    def commit_async(self, offsets: dict[Partition, int], metadata: dict[Partition, str] | None, done: Any) -> None:
        if self._passes(offsets, metadata):  # else never answered, as after a kill -9
            self.source.commit_async(offsets, metadata, done)

    def _passes(self, offsets: dict[Partition, int], metadata: dict[Partition, str] | None) -> bool:
        """Whether a commit goes through to the broker (not crashed yet); those are noted."""
        if self.crashed:
            return False
        self.committed.update(offsets)
        self.commit_with_metadata += bool(metadata)
        return True

    def crash(self) -> None:
        self.crashed = True


def _messages(n: int) -> list[tuple[bytes, bytes]]:
    """Five sensors, unevenly interleaved (so their counts, and phases, differ), none silent for max_gap_ms."""
    out = []
    for i in range(n):
        s = SENSORS[(0, 0, 1, 1, 2, 3, 4)[i % 7]]
        out.append((s.encode(), encode_reading(s, START_MS + i * 1000, [1.0 + i % 5, 2.0, 3.0, 4.0])))
    return out


def _worker(cfg: Config, events: list[dict[str, Any]]) -> Worker:
    source = open_source(cfg.kafka)
    worker = Worker(cfg, _Crashable(source), open_sink(cfg.kafka), ModelStore(cfg.paths.model_dir),
                    on_event=events.append)
    source.on_assign = source.on_revoke = worker.on_partitions_changed
    return worker


def _step_until(worker: Worker, records: int, timeout_steps: int = 2000) -> None:
    for _ in range(timeout_steps):
        if worker.totals.records >= records:
            return
        worker.step()
    raise AssertionError(f"the worker read {worker.totals.records} records, expected {records}")


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_a_batch_lost_with_a_crashed_worker_is_reported_again_under_the_same_ids(
        client: str, kafka_config: Config, kafka_tools: dict[str, Any], train_small: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    cfg = kafka_config.replace(kafka={"client": client, "max_poll_records": 40, "rebuild_lookback_messages": 150,
                                      "commit_interval_ms": 3_600_000},  # commits: on empty polls and ours
                               stream={"stride": 4})
    k = cfg.kafka
    ensure_topics(k, {k.input_topics[0]: 1, k.output_topic: 1, k.dead_letter_topic: 1})  # B's lookback: mid-stream
    bundle = train_small(cfg)
    bundle.threshold = 1e-9  # every window alarms: the events are the scored windows
    ModelStore(cfg.paths.model_dir).publish(bundle)
    messages = _messages(700)
    kafka_tools["produce"](cfg, messages)

    events_a: list[dict[str, Any]] = []
    a = _worker(cfg, events_a)
    a.refresh_model(force=True)
    _step_until(a, 300)
    a.commit()
    a.source.crash()  # type: ignore[attr-defined]
    committed = a.source.committed[(k.input_topics[0], 0)]  # type: ignore[attr-defined]
    _step_until(a, 500)
    a.close()  # its events are out, its last offsets never committed
    assert a.source.commit_with_metadata >= 1  # type: ignore[attr-defined]
    lost = {e["event_id"]: e["source"]["offset"] for e in events_a if e["source"]["offset"] >= committed}
    reached = max(lost.values()) + 1

    events_b: list[dict[str, Any]] = []
    b = _worker(cfg, events_b)
    with caplog.at_level(logging.INFO, logger="aestream.stream.phase"):
        kafka_tools["run_until_idle"](b)
    assert "restored the window phase of 5 of 5 sensors" in caplog.text
    assert b.totals.replayed == 150 and b.totals.records == 150 + len(messages) - committed
    again = {e["event_id"] for e in events_b if committed <= e["source"]["offset"] < reached}
    assert len(lost) >= 20 and again == set(lost)


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_metadata_the_broker_refuses_as_too_large_does_not_fail_the_commit(
        client: str, topics: Config, kafka_tools: dict[str, Any]) -> None:
    cfg = topics.replace(kafka={"client": client})
    kafka_tools["produce"](cfg, _messages(10))
    source = open_source(cfg.kafka)
    try:
        records = kafka_tools["poll_records"](source, 10)
        part = (records[0].topic, records[0].partition)
        assert source.commit({part: 3}, {part: "x" * 5000})  # over offset.metadata.max.bytes (4096)
        assert source.commit({part: 4}, {part: "fits"})  # from then on without metadata
    finally:
        source.close()
    consumer = KafkaConsumer(bootstrap_servers=list(cfg.kafka.bootstrap_servers), group_id=cfg.kafka.group_id,
                             enable_auto_commit=False)
    try:
        found = consumer.committed(TopicPartition(*part), metadata=True)
        assert found is not None and (found.offset, found.metadata) == (4, "")
    finally:
        consumer.close(autocommit=False)
