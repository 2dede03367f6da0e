"""Fixtures of the fault suite: the harness module, worker configs written to TOML, private brokers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import faultkit

from aestream.config import Config


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: fault-injection suite (kill -9, broker restart, rebalance, fuzz)")


@pytest.fixture()
def kit() -> Any:
    """The harness module (:mod:`faultkit`)."""
    return faultkit


@pytest.fixture()
def worker_cfg(kafka_config: Config) -> Config:
    """The session broker's per-test config, tuned for workers that are killed and restarted often."""
    return kafka_config.replace(kafka={"max_poll_records": 200, "rebuild_lookback_messages": 400,
                                       "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000})


@pytest.fixture()
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[faultkit.Broker]:
    """A broker of this test alone, which it may stop and start (never the session broker)."""
    broker = faultkit.Broker(tmp_path_factory.mktemp("private-kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
