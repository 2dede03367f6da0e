"""Metrics for a :class:`~aestream.worker.Worker` by composition: its ``step`` and ``refresh_model`` are wrapped
on the instance, so the worker module knows nothing about Prometheus.

The wrappers run in the worker's thread, which alone touches the consumer: they time each step, count what it
did, and every ``lag_interval_s`` read the consumer lag and the assignment. What the HTTP thread needs for
``/readyz`` is copied into a :class:`WorkerState` it can read without touching the consumer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from aestream.config import Config
from aestream.messages import Partition
from aestream.metrics import Metrics
from aestream.ops import OpsServer, broker_check
from aestream.worker import StepStats, Worker

__all__ = ["LagSource", "WorkerState", "instrument", "readiness_checks", "start_ops_server"]

log = logging.getLogger(__name__)

DEFAULT_LAG_INTERVAL_S = 5.0


class LagSource(Protocol):
    def lag(self) -> dict[Partition, int]: ...
    def assignment(self) -> set[Partition]: ...


@dataclass
class WorkerState:
    """What the worker thread last saw, for the readiness checks (plain attributes: safe to read anywhere)."""

    partitions: int = 0
    model_version: str | None = None
    steps: int = 0


def instrument(
    worker: Worker,
    metrics: Metrics,
    source: LagSource,
    *,
    lag_interval_s: float = DEFAULT_LAG_INTERVAL_S,
    broker_ok: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> WorkerState:
    """Wrap ``worker.step`` and ``worker.refresh_model`` to feed ``metrics``; returns the shared state.

    ``broker_ok`` (optional) skips the lag query while the broker is unreachable, so the loop does not wait on
    an offsets request that cannot succeed.
    """
    state = WorkerState()
    step, refresh = worker.step, worker.refresh_model
    next_lag = [-float("inf")]

    def timed_step() -> StepStats:
        t0 = time.perf_counter()
        stats = step()
        metrics.observe_step(stats, time.perf_counter() - t0)
        state.steps += 1
        state.partitions = len(source.assignment())
        metrics.partitions.set(state.partitions)
        now = clock()
        if now >= next_lag[0]:
            next_lag[0] = now + lag_interval_s
            _update_lag(source, metrics, broker_ok)
        return stats

    def watched_refresh(force: bool = False) -> None:
        refresh(force)
        bundle = worker.bundle
        if bundle is not None and bundle.version != state.model_version:
            state.model_version = bundle.version
            metrics.set_model(bundle.version, bundle.family)

    worker.step = timed_step  # type: ignore[method-assign]
    worker.refresh_model = watched_refresh  # type: ignore[method-assign]
    return state


def _update_lag(source: LagSource, metrics: Metrics, broker_ok: Callable[[], bool] | None) -> None:
    try:
        if broker_ok is not None and not broker_ok():
            return
        metrics.set_lag(source.lag())
    except Exception as e:  # metrics must never stop the loop; the next interval tries again
        log.warning("could not read the consumer lag: %s", e)


def readiness_checks(state: WorkerState, broker_ok: Callable[[], bool]) -> Callable[[], dict[str, bool]]:
    """The ``/readyz`` checks: partitions assigned, a model loaded, the broker reachable."""

    def checks() -> dict[str, bool]:
        return {
            "partitions_assigned": state.partitions > 0,
            "model_loaded": state.model_version is not None,
            "broker_reachable": broker_ok(),
        }

    return checks


def start_ops_server(
    worker: Worker,
    source: LagSource,
    cfg: Config,
    metrics: Metrics | None = None,
    broker_ok: Callable[[], bool] | None = None,
) -> OpsServer:
    """Instrument ``worker`` and serve ``/metrics``, ``/healthz`` and ``/readyz`` as ``cfg.ops`` says.

    ``broker_ok`` defaults to a TCP connect to ``cfg.kafka.bootstrap_servers``. Stop the server after the worker.
    """
    metrics = metrics if metrics is not None else Metrics()
    if broker_ok is None:
        broker_ok = broker_check(cfg.kafka.bootstrap_servers, cfg.ops.broker_check_timeout_s)
    state = instrument(worker, metrics, source, lag_interval_s=cfg.ops.lag_interval_s, broker_ok=broker_ok)
    server = OpsServer(cfg.ops.metrics_port, metrics, readiness_checks(state, broker_ok), host=cfg.ops.metrics_host)
    return server.start()
