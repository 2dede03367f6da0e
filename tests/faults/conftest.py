"""Fixtures of the fault suite: the harness module, worker configs written to TOML, private brokers."""

from __future__ import annotations

import gc
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import faultkit

from aestream.config import Config


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: fault-injection suite (kill -9, broker restart, rebalance, fuzz)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # kafka-python (3.0.12) drops the socket of a refused or abandoned connection without closing it; the fault
    # tests provoke exactly that, so its ResourceWarnings are not errors here (and are collected per test below)
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.filterwarnings("ignore::ResourceWarning"))


@pytest.fixture(autouse=True)
def _collect_leaked_sockets() -> Iterator[None]:
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """The same once more as the session ends: kafka-python holds some leaked sockets until then (pytest would
    report them, as errors, after the last test when a fault test runs last)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture()
def kit() -> Any:
    """The harness module (:mod:`faultkit`)."""
    return faultkit


@pytest.fixture()
def worker_cfg(kafka_config: Config) -> Config:
    """The session broker's per-test config, tuned for workers that are killed and restarted often; windows on
    the event-time grid (every 4 s = 4 readings of the test plant), whose phase a restart cannot shift."""
    return kafka_config.replace(kafka={"max_poll_records": 200, "rebuild_lookback_messages": 400,
                                       "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
                                stream={"stride": 1, "stride_ms": 4000})


@pytest.fixture()
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[faultkit.Broker]:
    """A broker of this test alone, which it may stop and start (never the session broker)."""
    broker = faultkit.Broker(tmp_path_factory.mktemp("private-kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
