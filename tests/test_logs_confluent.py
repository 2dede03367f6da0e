"""librdkafka's log lines (confluent-kafka, ``kafka.client = "confluent"``) go through Python logging: with
``--log-json`` every line on stderr is a JSON object, as a log shipper expects."""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest

from aestream.config import KafkaConfig
from aestream.ops.logs import configure_logging
from aestream.stream.messages import Outgoing

pytest.importorskip("confluent_kafka")


def test_librdkafka_s_lines_are_json_lines_with_log_json(capfd: pytest.CaptureFixture[str]) -> None:
    from aestream.kafka.confluent import ConfluentSink, ConfluentSource

    with socket.socket() as closed:  # a broker that is away: librdkafka logs its failed connections
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    configure_logging("INFO", json_lines=True)
    cfg = KafkaConfig(bootstrap_servers=(f"127.0.0.1:{port}",), input_topics=("readings",), group_id="g")
    source, sink = ConfluentSource(cfg), ConfluentSink(cfg)
    try:
        sink.send(Outgoing("events", b"{}", b"s"))
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            source.poll(timeout_ms=100)
            sink.acked(sink.mark(), 0.1)
        logging.getLogger("aestream.test").warning("a line of aestream's own")
    finally:
        source.close()
        sink.close(0.0)
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(lines) > 1, "librdkafka said nothing of the broker that is away"
    docs = [json.loads(line) for line in lines]  # raises on a plain line
    assert any(d.get("logger") == "librdkafka" for d in docs), docs[:3]
