"""Input compressed by its producer with any codec Kafka has (gzip, snappy, lz4, zstd) is read by either client,
and by kafka-python's fetch process: kafka-python decompresses in Python, with the codec libraries aestream
depends on (without them a compressed batch stopped the worker at every restart)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Producer

from aestream.config import Config
from aestream.kafka.kafka_python import ensure_topics, open_source
from aestream.stream.codec import encode_reading

pytestmark = pytest.mark.integration

CODECS = ("gzip", "snappy", "lz4", "zstd")


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("client", ["kafka-python", "kafka-python fetch process", "confluent"])
def test_compressed_input_is_read(kafka_config: Config, kafka_tools: Any, codec: str, client: str) -> None:
    cfg = kafka_config.replace(kafka={"client": client.split(" fetch")[0], "fetch_process": "fetch" in client})
    topic = cfg.kafka.input_topics[0]
    ensure_topics(cfg.kafka, {topic: 1})
    sent = [encode_reading("pump-1", 1_767_225_600_000 + 1000 * i, [float(i), 1.0]) for i in range(20)]
    producer = Producer({"bootstrap.servers": ",".join(cfg.kafka.bootstrap_servers), "compression.type": codec,
                         "linger.ms": 50})  # librdkafka has every codec built in: batches of 20 compressed readings
    for value in sent:
        producer.produce(topic, key=b"pump-1", value=value)
    assert producer.flush(30) == 0
    source = open_source(cfg.kafka, decode=(("a", "b"), 1_000_000, 10_000))
    try:
        got = kafka_tools["poll_records"](source, len(sent), polls=600)
    finally:
        source.close()
    assert [r.value for r in got] == sent
