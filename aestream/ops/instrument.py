"""Metrics for a :class:`~aestream.worker.Worker` by observation: a :class:`WorkerMetrics` is handed to the worker
as one of its observers, so the worker module knows nothing about Prometheus.

The observer runs in the worker's thread, which alone touches the consumer: it counts what each step did and how
long it took, stamps when it ended, and every ``lag_interval_s`` reads the consumer lag and the assignment. What
the HTTP thread needs for ``/readyz`` and ``/healthz`` is copied into a :class:`WorkerState` it can read without
touching the consumer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aestream.models.bundle import ModelBundle
from aestream.ops.metrics import Metrics
from aestream.ops.server import OpsServer
from aestream.stream.messages import Partition
from aestream.worker import StepStats, WorkerObserver

__all__ = ["LagSource", "WorkerMetrics", "WorkerState", "liveness_check", "readiness_checks", "start_ops_server"]

log = logging.getLogger(__name__)

DEFAULT_LAG_INTERVAL_S = 5.0


class LagSource(Protocol):
    def lag(self) -> dict[Partition, int]: ...
    def assignment(self) -> set[Partition]: ...


@dataclass
class WorkerState:
    """What the worker thread last saw, for the readiness and liveness checks (plain attributes: safe to read
    anywhere). ``last_step_at``: when the last step ended (the observer's clock), or the observer was made."""

    partitions: int = 0
    model_version: str | None = None
    steps: int = 0
    last_step_at: float = 0.0


class WorkerMetrics(WorkerObserver):
    """Feeds ``metrics`` from the worker's steps and model swaps; ``state`` is what ``/readyz`` reads.

    ``broker_ok`` (optional) skips the lag query while the broker is unreachable, so the loop does not wait on
    an offsets request that cannot succeed.
    """

    def __init__(self, metrics: Metrics, source: LagSource, *, lag_interval_s: float = DEFAULT_LAG_INTERVAL_S,
                 broker_ok: Callable[[], bool] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics, self.source, self.broker_ok, self.clock = metrics, source, broker_ok, clock
        self.lag_interval_s = lag_interval_s
        self.state = WorkerState(last_step_at=clock())
        self._next_lag = -float("inf")

    def on_step(self, stats: StepStats, seconds: float) -> None:
        self.metrics.observe_step(stats, seconds)
        self.state.steps += 1
        self.state.partitions = len(self.source.assignment())
        self.metrics.partitions.set(self.state.partitions)
        now = self.state.last_step_at = self.clock()  # an empty poll is a step too
        if now >= self._next_lag:
            self._next_lag = now + self.lag_interval_s
            self._update_lag()

    def on_model(self, bundle: ModelBundle) -> None:
        self.state.model_version = bundle.version
        self.metrics.set_model(bundle.version, bundle.family)

    def on_model_refused(self, version: str, reason: str) -> None:
        self.metrics.model_refused()

    def _update_lag(self) -> None:
        try:
            if self.broker_ok is not None and not self.broker_ok():
                return
            self.metrics.set_lag(self.source.lag())
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


def liveness_check(state: WorkerState, timeout_s: float,
                   clock: Callable[[], float] = time.monotonic) -> Callable[[], dict[str, Any]]:
    """The ``/healthz`` check: alive while the consume loop completed a step within ``timeout_s`` (0: always).

    >>> now = [10.0]
    >>> check = liveness_check(WorkerState(last_step_at=0.0), 5.0, clock=lambda: now[0])
    >>> check()["alive"], check()["seconds_since_step"]
    (False, 10.0)
    """

    def check() -> dict[str, Any]:
        since = round(clock() - state.last_step_at, 3)
        return {"alive": not timeout_s or since <= timeout_s, "seconds_since_step": since, "timeout_s": timeout_s}

    return check


def start_ops_server(observer: WorkerMetrics, port: int, host: str, broker_ok: Callable[[], bool],
                     liveness_timeout_s: float = 0.0) -> OpsServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` for the worker ``observer`` watches; ``/healthz`` fails
    after ``liveness_timeout_s`` without a step (0: never). Stop it after the worker."""
    return OpsServer(port, observer.metrics, readiness_checks(observer.state, broker_ok), host=host,
                     liveness=liveness_check(observer.state, liveness_timeout_s, observer.clock)).start()
