"""A message above 1 MiB, and a message the broker refuses, on both clients: the dead letter keeps a prefix, the
length and the SHA-256 of a large value, a refused produce is dead-lettered or logged and counted, and the worker
never stops on either (it used to raise out of the step and restart on the same offset, forever)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from aestream.config import Config
from aestream.kafka.kafka_python import open_sink, open_source
from aestream.kafka.protocols import AckedSink
from aestream.models.store import ModelStore
from aestream.stream.codec import encode_reading
from aestream.stream.messages import Outgoing
from aestream.worker import Worker

pytestmark = pytest.mark.integration

START_MS = 1_767_225_600_000
MIB = 1 << 20
CLIENTS = ["kafka-python", "confluent"]


def _create(cfg: Config, topics: dict[str, int]) -> None:
    """Topics of one partition, each with its ``max.message.bytes``."""
    admin = KafkaAdminClient(bootstrap_servers=list(cfg.kafka.bootstrap_servers))
    try:
        admin.create_topics([NewTopic(t, 1, 1, topic_configs={"max.message.bytes": str(n)})
                             for t, n in topics.items()])
    finally:
        admin.close()


@pytest.mark.parametrize("client", CLIENTS)
def test_a_value_above_1_mib_is_dead_lettered_as_prefix_length_and_digest_and_the_worker_goes_on(
        client: str, kafka_config: Config, train_small: Any, kafka_tools: Any) -> None:
    cfg = kafka_config.replace(kafka={"client": client})
    k = cfg.kafka
    _create(cfg, {k.input_topics[0]: 4 * MIB, k.output_topic: MIB, k.dead_letter_topic: MIB})
    ModelStore(cfg.paths.model_dir).publish(train_small(cfg))
    big = json.dumps({"sensor": "s", "ts": START_MS, "values": [1, 2, 3, 4], "pad": "x" * (3 * MIB // 2)}).encode()
    readings = [encode_reading("s", START_MS + 1000 * i, [1.0, 2, 3, 4]) for i in range(40)]
    producer = KafkaProducer(bootstrap_servers=list(k.bootstrap_servers), max_request_size=8 * MIB)
    for value in [*readings[:20], big, *readings[20:]]:
        producer.send(k.input_topics[0], key=b"s", value=value).get(30)
    producer.close()

    source = open_source(k)
    worker = Worker(cfg, source, open_sink(k), ModelStore(cfg.paths.model_dir))
    source.on_assign = source.on_revoke = worker.on_partitions_changed
    failed: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(max_idle_s=4.0)
        except BaseException as e:  # what the loop lets escape: a crash (and, under systemd, a restart loop)
            failed.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(120)
    assert not t.is_alive() and not failed, failed
    assert worker.totals.readings == 40 and worker.totals.dead_letters == 1

    (dead,) = kafka_tools["read_all"](cfg, k.dead_letter_topic)
    h = dead.headers
    assert b"exceeds stream.max_message_bytes" in h["aestream.reason"]
    assert h["aestream.value.truncated"] == b"true" and h["aestream.value.length"] == str(len(big)).encode()
    assert h["aestream.value.sha256"] == hashlib.sha256(big).hexdigest().encode()
    assert dead.value == big[: len(dead.value)] and 0 < len(dead.value) < 64 * 1024
    assert h["aestream.source.offset"] == b"20" and dead.key == b"s"


@pytest.mark.parametrize("client", CLIENTS)
def test_a_message_the_broker_refuses_is_dead_lettered_and_a_refused_dead_letter_is_logged_never_raised(
        client: str, kafka_config: Config, kafka_tools: Any, caplog: pytest.LogCaptureFixture) -> None:
    cfg = kafka_config.replace(kafka={"client": client})
    k = cfg.kafka
    small, tiny_dlq = f"{k.output_topic}-small", f"{k.dead_letter_topic}-tiny"
    _create(cfg, {small: 2000, k.dead_letter_topic: MIB, tiny_dlq: 2000})
    refused: list[str] = []
    sink = open_sink(k, on_refused=refused.append)
    sink.send(Outgoing(small, b"e" * 5000, b"pump-1", [("aestream.kind", b"event")]))  # within the client's limit
    sink.send(Outgoing(small, b"ok", b"pump-2"))
    sink.flush()  # used to raise "producing failed": the step died and was redone, forever
    sink.close()
    (dead,) = kafka_tools["read_all"](cfg, k.dead_letter_topic)
    assert dead.value == b"e" * 5000 and dead.key == b"pump-1"
    assert dead.headers["aestream.kind"] == b"event"  # the original headers travel with it
    assert dead.headers["aestream.source.topic"] == small.encode()
    reason = dead.headers["aestream.reason"]
    assert reason.startswith(f"producing to {small} was refused (5000 bytes): ".encode())
    assert b"MessageSizeTooLargeError" in reason or b"MSG_SIZE_TOO_LARGE" in reason
    assert [m.value for m in kafka_tools["read_all"](cfg, small)] == [b"ok"]
    assert refused == ["dead_lettered"]

    # a dead letter the broker refuses in turn: logged and counted, never raised nor retried
    sink = open_sink(cfg.replace(kafka={"dead_letter_topic": tiny_dlq}).kafka, on_refused=refused.append)
    sink.send(Outgoing(small, b"e" * 5000, b"pump-3"))
    sink.flush()
    sink.close()
    assert refused == ["dead_lettered", "dead_lettered", "dropped"]
    assert kafka_tools["read_all"](cfg, tiny_dlq) == []
    assert any("dropped" in r.getMessage() and tiny_dlq in r.getMessage() for r in caplog.records)


def _until_acked(sink: Any, mark: int) -> float:
    """Seconds until ``sink.acked(mark)``, asked without a flush as the worker's loop asks it."""
    t0 = time.monotonic()
    while not sink.acked(mark):
        assert time.monotonic() - t0 < 30, "never acknowledged"
        time.sleep(0.002)
    return time.monotonic() - t0


@pytest.mark.parametrize("client", CLIENTS)
def test_a_sink_says_without_a_flush_when_what_was_sent_before_a_mark_is_acknowledged(
        client: str, kafka_config: Config, kafka_tools: Any) -> None:
    cfg = kafka_config.replace(kafka={"client": client})
    k = cfg.kafka
    small = f"{k.output_topic}-small"
    _create(cfg, {k.output_topic: MIB, small: 2000, k.dead_letter_topic: MIB})
    refused: list[str] = []
    sink = open_sink(k, on_refused=refused.append)
    assert isinstance(sink, AckedSink) and sink.acked(sink.mark())  # nothing sent: nothing to wait for
    for i in range(200):
        sink.send(Outgoing(k.output_topic, b"%d" % i, b"pump-%d" % (i % 7)))
    mark = sink.mark()
    _until_acked(sink, mark)
    assert len(kafka_tools["read_all"](cfg, k.output_topic)) == 200  # acknowledged: on the broker

    # a message the broker refuses, among others in flight: once all are done, it is dead-lettered as a flush would
    sink.send(Outgoing(small, b"e" * 5000, b"pump-1"))
    sink.send(Outgoing(small, b"ok", b"pump-2"))
    _until_acked(sink, sink.mark())
    assert refused == ["dead_lettered"]
    (dead,) = kafka_tools["read_all"](cfg, k.dead_letter_topic)
    assert dead.value == b"e" * 5000 and dead.headers["aestream.source.topic"] == small.encode()
    assert [m.value for m in kafka_tools["read_all"](cfg, small)] == [b"ok"]

    # waiting for the acknowledgements, as an empty poll waits: it returns once they are all in
    for i in range(200):
        sink.send(Outgoing(k.output_topic, b"w%d" % i, b"pump-%d" % (i % 7)))
    assert sink.acked(sink.mark(), timeout_s=30), "not acknowledged within 30 s"
    assert len(kafka_tools["read_all"](cfg, k.output_topic)) == 400
    sink.close()
