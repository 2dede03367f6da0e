"""kafka-python's fetch process (``kafka.fetch_process``, off in the shipped config): the group member keeps the
membership and the commits, a child process reads the partitions it was given from the offsets it names."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaError

from aestream.config import Config
from aestream.kafka.kafka_python import KafkaSource, open_source
from aestream.stream.codec import Block, encode_reading
from aestream.stream.messages import Record

pytestmark = pytest.mark.integration

PER_PARTITION = 60


@pytest.fixture()
def topics(topics: Config) -> Config:
    return topics.replace(kafka={"fetch_process": True})


def _fill(cfg: Config) -> None:
    producer = KafkaProducer(bootstrap_servers=list(cfg.kafka.bootstrap_servers), linger_ms=5)
    for p in (0, 1):
        for i in range(PER_PARTITION):
            producer.send(cfg.kafka.input_topics[0], key=b"s%d" % p, value=b"p%d-%d" % (p, i), partition=p)
    producer.flush()
    producer.close()


def _poll_until(sources: list[KafkaSource], done: Any, timeout_s: float = 60.0) -> list[list[Record]]:
    """Poll every source in turn (each must poll for a rebalance to complete) until ``done(got)``."""
    got: list[list[Record]] = [[] for _ in sources]
    deadline = time.monotonic() + timeout_s
    while not done(got) and time.monotonic() < deadline:
        for i, s in enumerate(sources):
            got[i] += s.poll(timeout_ms=100)
    assert done(got), f"gave up after {timeout_s} s: {[len(g) for g in got]} records"
    return got


def test_each_member_reads_only_its_partitions_from_where_its_predecessor_committed(topics: Config) -> None:
    cfg = topics.replace(kafka={"rebuild_lookback_messages": 10})
    assert cfg.kafka.fetch_process and cfg.kafka.client == "kafka-python"
    _fill(cfg)
    topic = cfg.kafka.input_topics[0]
    first = open_source(cfg.kafka)
    second = None
    try:
        [alone] = _poll_until([first], lambda g: len(g[0]) == 2 * PER_PARTITION)
        assert first._fetch is not None and first._fetch.proc.poll() is None  # a child is fetching
        for p in (0, 1):  # each partition in order, from the beginning (no committed offset: earliest)
            assert [r.offset for r in alone if r.partition == p] == list(range(PER_PARTITION))
        assert not any(r.replay for r in alone)
        assert first.lag() == {(topic, 0): 0, (topic, 1): 0}
        first.commit({(topic, 0): 30, (topic, 1): 40})  # as if it had processed only this far

        second = open_source(cfg.kafka)  # joins: the group splits the two partitions between them
        got = _poll_until([first, second], lambda g: len(first.assignment()) == len(second.assignment()) == 1
                          and all(g))
        owned = [first.assignment(), second.assignment()]
    finally:
        first.close()
        if second is not None:
            second.close()
    for [(_, mine)], records in zip(owned, got):
        assert {r.partition for r in records} == {mine}, "a record of a partition it no longer owns"
        committed = {0: 30, 1: 40}[mine]
        # the lookback's records (flagged as replays) refill the windows, then the rest from the committed offset;
        # each rebalance (joining can take two) starts the partition over from there, none from anywhere else
        offsets = [r.offset for r in records]
        runs = [i for i in range(len(offsets)) if i == 0 or offsets[i] != offsets[i - 1] + 1]
        assert [offsets[i] for i in runs] == [committed - 10] * len(runs), offsets
        assert offsets[runs[-1]:] == list(range(committed - 10, PER_PARTITION))
        assert [r.replay for r in records] == [r.offset < committed for r in records]
        assert records[-1].value == b"p%d-%d" % (mine, PER_PARTITION - 1)


def test_the_fetch_process_ends_with_its_source_and_a_dead_one_fails_the_poll(topics: Config) -> None:
    _fill(topics)
    source = open_source(topics.kafka)
    try:
        _poll_until([source], lambda g: len(g[0]) > 0)
        assert source._fetch is not None
        child = source._fetch.proc
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        with pytest.raises(KafkaError, match="the fetch process exited"):
            for _ in range(100):  # what it had sent before it died may come first
                source.poll(timeout_ms=100)
    finally:
        source.close()  # a dead child does not stop the close

    closing = open_source(topics.replace(kafka={"group_id": topics.kafka.group_id + "-2"}).kafka)
    _poll_until([closing], lambda g: len(g[0]) > 0)
    assert closing._fetch is not None
    child = closing._fetch.proc
    closing.close()
    assert child.poll() is not None, "the fetch process outlived its source"


def test_batched_messages_come_decoded_and_the_others_as_they_came(topics: Config) -> None:
    cfg = topics.replace(stream={"channels": ("a", "b")})
    s = cfg.stream
    ts = 1_767_225_600_000
    messages = [
        json.dumps({"sensor": "c", "ts": [ts, ts + 1000], "values": [[1, 2], [3, 4]]}).encode(),  # columnar
        json.dumps([{"sensor": "b", "ts": ts + i, "values": [i, 2 * i]} for i in range(3)]).encode(),  # an array
        encode_reading("s", ts, [1.0, 2.0]),  # a single reading: the worker decodes it
        b"{broken",  # the worker finds the reason and dead-letters it, with the original bytes
    ]
    producer = KafkaProducer(bootstrap_servers=list(cfg.kafka.bootstrap_servers))
    for m in messages:
        producer.send(cfg.kafka.input_topics[0], value=m, partition=0)
    producer.flush()
    producer.close()
    source = open_source(cfg.kafka, decode=(s.channels, s.max_message_bytes, s.max_readings_per_message))
    try:
        [got] = _poll_until([source], lambda g: len(g[0]) == len(messages))
    finally:
        source.close()
    assert [r.value for r in got] == messages
    columnar, array, single, broken = (r.decoded for r in got)
    assert isinstance(columnar, Block) and columnar.sensor == "c" and columnar.values.tolist() == [[1, 2], [3, 4]]
    assert isinstance(array, Block) and array.ts_ms.tolist() == [ts, ts + 1, ts + 2]
    assert single is None and broken is None
