"""tail_topic's stopping rule, over a stand-in consumer: the decode command's --idle-s is how long no record
came, not one empty poll."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

import aestream.kafka.kafka_python as kp
from aestream.config import KafkaConfig


class _Message:
    def __init__(self, value: bytes) -> None:
        self.value = value


class _Consumer:
    """Two empty polls (a broker slow to answer the first fetch), three records, then nothing."""

    def __init__(self, **options: Any) -> None:
        self.polls = [{}, {}, {"tp": [_Message(json.dumps(i).encode()) for i in range(3)]}]

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def assign(self, tps: Any) -> None: ...

    def seek_to_beginning(self, *tps: Any) -> None: ...

    def poll(self, timeout_ms: int = 0) -> dict[str, list[_Message]]:
        return self.polls.pop(0) if self.polls else {}

    def close(self, autocommit: bool = True) -> None: ...


def test_a_tail_waits_idle_s_without_records_before_it_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kp, "KafkaConsumer", _Consumer)
    assert list(kp.tail_topic(KafkaConfig(), "t", timeout_s=math.inf, idle_s=0.2)) == [0, 1, 2]
    assert list(kp.tail_topic(KafkaConfig(), "t")) == [], "without idle_s one empty poll ends it, as before"
