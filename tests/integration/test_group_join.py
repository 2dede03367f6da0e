"""A worker joins its consumer group only when it polls: one waiting for its first model (no poll) holds no
partition, so the others in the group read them all (librdkafka would join in the background at subscribe and hold
its share, unread, and stall the group's rebalances until max.poll.interval.ms)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aestream.app import build_app
from aestream.config import Config
from aestream.kafka.kafka_python import ensure_topics, open_source

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_a_worker_waiting_for_its_first_model_leaves_every_partition_to_the_group(
        kafka_config: Config, tmp_path: Path, client: str) -> None:
    cfg = kafka_config.replace(kafka={"client": client}, paths={"model_dir": str(tmp_path / "no-models")})
    ensure_topics(cfg.kafka, {cfg.kafka.input_topics[0]: 2})
    waiting = build_app(cfg, model_check_interval_s=0.2).worker
    other = open_source(cfg.kafka)
    try:
        waiting.step()  # no model: no poll
        deadline = time.monotonic() + 30
        while len(other.assignment()) < 2 and time.monotonic() < deadline:
            other.poll(timeout_ms=200)
            waiting.step()
        assert other.assignment() == {(cfg.kafka.input_topics[0], 0), (cfg.kafka.input_topics[0], 1)}
        assert waiting.bundle is None
    finally:
        other.close()
        waiting.close()
