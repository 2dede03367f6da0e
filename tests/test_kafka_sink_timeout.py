"""kafka-python's send blocks up to max_block_ms for a topic's metadata or buffer room, then raises
KafkaTimeoutError: the sink turns it into a DeliveryError (exit 1, the records read again), not a traceback."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError

from aestream.errors import DeliveryError
from aestream.kafka.kafka_python import KafkaSink
from aestream.stream.messages import Outgoing


class _AwayProducer:
    def send(self, topic: str, **kwargs: Any) -> Any:
        raise KafkaTimeoutError("Failed to update metadata after 60.0 secs.")


def test_a_send_that_timed_out_waiting_for_the_broker_is_a_delivery_error() -> None:
    sink = KafkaSink.__new__(KafkaSink)  # no client: the producer is the stand-in above
    sink.producer, sink._futures, sink._failed = _AwayProducer(), deque(), []
    with pytest.raises(DeliveryError, match=r"producing to dlq failed: .*read again"):
        sink.send(Outgoing("dlq", b"{}", b"s"))
