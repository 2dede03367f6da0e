"""kafka-python's group member on the worker's thread: when its fetcher has nothing in flight to wait on, a poll
sleeps at most ``IDLE_SLEEP_MS`` while it has partitions, not kafka-python's ``retry_backoff_ms`` (100 ms), and
errors still back off 100 ms; a poll that emptied what was fetched while the broker holds more sends the next
fetch, one that caught up does not; the lag comes from the high watermarks the fetches carried, without a
request."""

from __future__ import annotations

import time
from typing import Any

import kafka.consumer.group
import pytest

from aestream.config import Config
from aestream.kafka.fetch_child import IDLE_SLEEP_MS
from aestream.kafka.kafka_python import ensure_topics, open_source

pytestmark = pytest.mark.integration


class _RecordedTime:
    """``time`` as kafka-python's consumer module sees it, with each sleep written down."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        time.sleep(seconds)


def test_a_poll_with_nothing_to_wait_on_sleeps_briefly(topics: Config, kafka_tools: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _RecordedTime()
    monkeypatch.setattr(kafka.consumer.group, "time", clock)
    kafka_tools["produce"](topics, [(b"s1", b"{}")])
    source = open_source(topics.kafka)
    try:
        deadline = time.monotonic() + 60
        while not source.poll() and time.monotonic() < deadline:  # joined, assigned, and the record read
            pass
        assert source.assignment(), "no partitions within 60 s"
        # with every partition paused nothing is fetchable: once the fetch in flight returns, each poll finds
        # nothing to wait on, the state a fetch response that lands between two looks of the fetcher leaves
        source.consumer.pause(*source.consumer.assignment())
        clock.sleeps.clear()
        while not clock.sleeps and time.monotonic() < deadline:
            assert source.poll(timeout_ms=300) == []
        assigned = list(clock.sleeps)
        # a member without partitions keeps kafka-python's sleep: a short one would only loop
        monkeypatch.setattr(source.consumer, "assignment", set)
        clock.sleeps.clear()
        while not any(s > IDLE_SLEEP_MS / 1000 for s in clock.sleeps) and time.monotonic() < deadline:
            assert source.poll(timeout_ms=300) == []
    finally:
        source.close()
    assert assigned, "no idle sleep within 60 s"
    assert max(assigned) <= IDLE_SLEEP_MS / 1000  # kafka-python's own: min(poll timeout, 100 ms)
    assert max(clock.sleeps) > IDLE_SLEEP_MS / 1000, "no longer sleep without partitions within 60 s"
    # the coordinator, the fetcher and the network client keep the backoff they were built with
    assert source.consumer._coordinator.config["retry_backoff_ms"] == 100
    assert source.consumer._fetcher.config["retry_backoff_ms"] == 100


def _first_records(source: Any, max_records: int | None = None) -> list[Any]:
    """The first records a new source polls (it joins, then waits for the first fetch response), within 60 s."""
    got: list[Any] = []
    deadline = time.monotonic() + 60
    while not got and time.monotonic() < deadline:
        got = source.poll(max_records=max_records)
    return got


def test_a_poll_behind_the_broker_leaves_the_next_fetch_sent(kafka_config: Config, kafka_tools: Any) -> None:
    ensure_topics(kafka_config.kafka, {kafka_config.kafka.input_topics[0]: 1})
    # 3 MB: a fetch brings about 1 MB (max_partition_fetch_bytes), fewer records than a poll may take
    kafka_tools["produce"](kafka_config, [(b"s1", bytes(100_000))] * 30)
    source = open_source(kafka_config.kafka)
    try:
        got = _first_records(source)
        fetcher = source.consumer._fetcher
        sent = fetcher.in_flight_fetches() or bool(fetcher._completed_fetches)  # the broker answers at once
    finally:
        source.close()
    assert 0 < len(got) < 30, "not a partial fetch"
    assert sent, "the poll returned its records with no fetch sent for the rest"


def test_a_poll_that_caught_up_sends_no_fetch_of_its_own(kafka_config: Config, kafka_tools: Any) -> None:
    ensure_topics(kafka_config.kafka, {kafka_config.kafka.input_topics[0]: 1})
    kafka_tools["produce"](kafka_config, [(b"s1", b"{}")] * 30)
    source = open_source(kafka_config.kafka)
    try:
        got = _first_records(source)
        in_flight = source.consumer._fetcher.in_flight_fetches()
    finally:
        source.close()
    assert len(got) == 30, "no records within 60 s"
    # the next poll sends it: one sent now would bring back the first records to arrive while these are processed
    assert not in_flight


def test_the_lag_is_read_from_the_fetched_high_watermarks(kafka_config: Config, kafka_tools: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    topic = kafka_config.kafka.input_topics[0]
    ensure_topics(kafka_config.kafka, {topic: 1})
    kafka_tools["produce"](kafka_config, [(b"s1", b"{}")] * 50)
    source = open_source(kafka_config.kafka)
    try:
        got = _first_records(source, max_records=10)
        assert len(got) == 10, "no records within 60 s"

        def no_request(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the lag asked the broker")

        monkeypatch.setattr(source.consumer, "end_offsets", no_request)
        lag = source.lag()  # the fetch brought all 50, and the watermark 50; 10 were handed out
    finally:
        source.close()
    assert lag == {(topic, 0): 40}


@pytest.mark.parametrize(("kafka", "expected"), [
    ({}, [b"committed-1", b"committed-2"]),
    ({"fetch_process": True}, [b"committed-1", b"committed-2"]),
    ({"client": "confluent"}, [b"committed-1", b"committed-2"]),
    ({"isolation_level": "read_uncommitted"}, [b"committed-1", b"aborted", b"committed-2"]),
], ids=["kafka-python", "fetch-process", "confluent", "read-uncommitted"])
def test_a_transaction_its_producer_aborted_is_read_only_when_asked(topics: Config, kafka: dict,
                                                                    expected: list[bytes]) -> None:
    from confluent_kafka import Producer

    (topic,) = topics.kafka.input_topics
    producer = Producer({"bootstrap.servers": topics.kafka.bootstrap_servers[0], "transactional.id": f"tx-{topic}"})
    producer.init_transactions(30)
    for value, commit in ((b"committed-1", True), (b"aborted", False), (b"committed-2", True)):
        producer.begin_transaction()
        producer.produce(topic, key=b"s", value=value)
        producer.flush(10)
        producer.commit_transaction(30) if commit else producer.abort_transaction(30)
    source = open_source(topics.replace(kafka=kafka).kafka)
    try:
        got: list[bytes | None] = []
        deadline = time.monotonic() + 60
        while b"committed-2" not in got and time.monotonic() < deadline:
            got += [r.value for r in source.poll(timeout_ms=300) if not r.replay]
        assert got == expected, "both clients read committed records only, unless told otherwise"
    finally:
        source.close()


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
@pytest.mark.parametrize(("reset", "committed", "left"), [
    ("latest", None, 0),  # caught up: nothing to read
    ("earliest", None, 50),  # all of it
    ("latest", 30, 20),  # from the group's committed offset
])
def test_the_lag_of_a_partition_just_assigned_is_what_is_left_to_read(
        kafka_config: Config, kafka_tools: Any, client: str, reset: str, committed: int | None, left: int) -> None:
    cfg = kafka_config.replace(kafka={"client": client, "rebuild_lookback_messages": 0, "auto_offset_reset": reset})
    topic = cfg.kafka.input_topics[0]
    ensure_topics(cfg.kafka, {topic: 1})
    kafka_tools["produce"](cfg, [(b"s1", b"{}")] * 50)
    if committed is not None:
        first = open_source(cfg.kafka)
        try:
            _assigned(first)
            assert first.commit({(topic, 0): committed})
        finally:
            first.close()
    source = open_source(cfg.kafka)
    try:
        n_read = _assigned(source)
        assert source.lag() == {(topic, 0): left - n_read}
    finally:
        source.close()


def _assigned(source: Any) -> int:
    """Poll until ``source`` has its partition; the records read meanwhile."""
    n_read, deadline = 0, time.monotonic() + 30
    while not source.assignment() and time.monotonic() < deadline:
        n_read += len(source.poll(timeout_ms=0, max_records=1))
    assert source.assignment(), "no partition within 30 s"
    return n_read
