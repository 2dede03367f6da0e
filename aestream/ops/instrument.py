"""Metrics for a :class:`~aestream.worker.Worker` by observation: a :class:`WorkerMetrics` is handed to the worker
as one of its observers, so the worker module knows nothing about Prometheus.

The observer runs in the worker's thread, which alone touches the consumer: it counts what each step did and how
long it took, and every ``lag_interval_s`` reads the consumer lag and the assignment. What the HTTP thread needs
for ``/readyz`` is copied into a :class:`WorkerState` it can read without touching the consumer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from aestream.models.bundle import ModelBundle
from aestream.ops.metrics import Metrics
from aestream.ops.server import OpsServer
from aestream.stream.messages import Partition
from aestream.worker import StepStats, WorkerObserver

__all__ = ["LagSource", "WorkerMetrics", "WorkerState", "readiness_checks", "start_ops_server"]

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


class WorkerMetrics(WorkerObserver):
    """Feeds ``metrics`` from the worker's steps and model swaps; ``state`` is what ``/readyz`` reads.

    ``broker_ok`` (optional) skips the lag query while the broker is unreachable, so the loop does not wait on
    an offsets request that cannot succeed.
    """

    def __init__(self, metrics: Metrics, source: LagSource, *, lag_interval_s: float = DEFAULT_LAG_INTERVAL_S,
                 broker_ok: Callable[[], bool] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics, self.source, self.broker_ok, self.clock = metrics, source, broker_ok, clock
        self.lag_interval_s = lag_interval_s
        self.state = WorkerState()
        self._next_lag = -float("inf")

    def on_step(self, stats: StepStats, seconds: float) -> None:
        self.metrics.observe_step(stats, seconds)
        self.state.steps += 1
        self.state.partitions = len(self.source.assignment())
        self.metrics.partitions.set(self.state.partitions)
        now = self.clock()
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


def start_ops_server(observer: WorkerMetrics, port: int, host: str, broker_ok: Callable[[], bool]) -> OpsServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` for the worker ``observer`` watches. Stop it after the
    worker."""
    return OpsServer(port, observer.metrics, readiness_checks(observer.state, broker_ok), host=host).start()
