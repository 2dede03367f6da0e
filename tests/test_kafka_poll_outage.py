"""A broker that is down while the worker polls: kafka-python 3 can raise the refused connection from the group
member's poll (its coordinator lookup). The source waits it out; other errors still stop the worker."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from kafka.errors import KafkaConnectionError, KafkaError, TopicAuthorizationFailedError

from aestream.config import KafkaConfig
from aestream.kafka.kafka_python import KafkaSource


class _Consumer:
    """Raises each of ``errors`` in turn from poll, then returns nothing."""

    def __init__(self, *errors: KafkaError) -> None:
        self.errors = list(errors)
        self.polls = 0
        self.config: dict[str, Any] = {}  # where the member sets kafka-python's idle sleep

    def assignment(self) -> set[Any]:
        return set()

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Any]]:
        self.polls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {}


def _source(consumer: _Consumer) -> KafkaSource:
    source = object.__new__(KafkaSource)  # no broker: the member's consumer is played by the test
    source.cfg, source.consumer, source._fetch = KafkaConfig(poll_timeout_ms=1), consumer, None
    source._pending, source._replay_until, source._unreachable = set(), {}, False
    return source


def test_a_refused_connection_is_polled_through_and_logged_once_each_way(caplog: pytest.LogCaptureFixture) -> None:
    consumer = _Consumer(KafkaConnectionError("111 ECONNREFUSED"), KafkaConnectionError("111 ECONNREFUSED"))
    source = _source(consumer)
    with caplog.at_level(logging.INFO, logger="aestream.kafka.kafka_python"):
        assert [source.poll() for _ in range(3)] == [[], [], []]
    assert consumer.polls == 3
    said = [r.getMessage() for r in caplog.records]
    assert len([m for m in said if "ECONNREFUSED" in m]) == 1 and said[-1] == "polling works again", said


def test_an_error_that_retrying_cannot_fix_still_stops_the_poll() -> None:
    source = _source(_Consumer(TopicAuthorizationFailedError("not allowed")))
    with pytest.raises(TopicAuthorizationFailedError):
        source.poll()
