"""Helpers for talking to the real broker in integration tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from aestream.app import build_app
from aestream.config import Config
from aestream.kafka.kafka_python import ensure_topics
from aestream.stream.messages import Record
from aestream.worker import Worker

pytestmark = pytest.mark.integration


@dataclass
class Message:
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    partition: int
    offset: int


def produce(cfg: Config, messages: list[tuple[bytes | None, bytes]], topic: str | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=list(cfg.kafka.bootstrap_servers), linger_ms=5)
    for key, value in messages:
        producer.send(topic or cfg.kafka.input_topics[0], key=key, value=value)
    producer.flush()
    producer.close()


def read_all(cfg: Config, topic: str, idle_s: float = 1.5) -> list[Message]:
    """Every message now in ``topic``, from the beginning, without a group."""
    consumer = KafkaConsumer(bootstrap_servers=list(cfg.kafka.bootstrap_servers), enable_auto_commit=False)
    parts = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    out: list[Message] = []
    if tps:
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            batch = consumer.poll(timeout_ms=300)
            for msgs in batch.values():
                for m in msgs:
                    out.append(Message(m.key, m.value, {k: v for k, v in m.headers}, m.partition, m.offset))
                last = time.monotonic()
    consumer.close()
    return out


def poll_records(source: Any, n: int, polls: int = 200) -> list[Record]:
    """At least ``n`` records from a source (as the worker polls it), or what ``polls`` polls gave."""
    records: list[Record] = []
    for _ in range(polls):
        records += source.poll()
        if len(records) >= n:
            break
    return records


def make_worker(cfg: Config, **kwargs: Any) -> Worker:
    """The worker ``aestream run`` builds from ``cfg`` (:func:`aestream.app.build_app`), without the HTTP endpoint
    (``test_ops_e2e`` runs that one): the tests run the worker's loop, not the app's, so nothing would stop it."""
    return build_app(cfg.replace(ops={"metrics_enabled": False}), **kwargs).worker


def run_until_idle(worker: Worker, idle_s: float = 4.0, timeout_s: float = 120.0) -> None:
    """Run the worker in a thread until it has seen no records for ``idle_s``."""
    t = threading.Thread(target=worker.run, kwargs={"max_idle_s": idle_s}, daemon=True)
    t.start()
    t.join(timeout_s)
    assert not t.is_alive(), "worker did not go idle in time"


@pytest.fixture()
def topics(kafka_config: Config) -> Config:
    k = kafka_config.kafka
    ensure_topics(k, {k.input_topics[0]: 2, k.output_topic: 1, k.dead_letter_topic: 1})
    return kafka_config


@pytest.fixture()
def kafka_tools() -> dict[str, Callable[..., Any]]:
    return {"produce": produce, "read_all": read_all, "make_worker": make_worker, "run_until_idle": run_until_idle,
            "poll_records": poll_records}
