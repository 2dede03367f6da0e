"""What the worker hands to the stages after scoring: alert routing, the normal-data reservoir, extra streams.

A stage gets every scored window of a step (replayed ones included, flagged) and returns messages to produce;
the worker sends them before it flushes and commits, so they share the step's at-least-once guarantee. The
messages that write a stage's own state to a changelog come from ``state`` instead: the worker asks for them once
the messages sent since its last commit are flushed, and flushes them before it commits, so a restored state is
never ahead of the events it reflects (a restart that replays a step then re-emits its events rather than
believing them sent).
``on_tick`` runs once per step with the processing clock, for time-driven work (silent sensors, say);
``on_late`` gets the sensors that dropped many late readings (:mod:`aestream.stream.lateness`), as they do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from aestream.stream.lateness import LateReport
from aestream.stream.messages import Outgoing, Partition
from aestream.stream.windows import Window

__all__ = ["Scored", "Stage"]


@dataclass(frozen=True, slots=True)
class Scored:
    """One scored window: its (smoothed) score, whether the alarm rule fired, the anomaly event if one was
    emitted, the channel shares, the serving model version, and whether it was a replay (rebuild after a
    partition move: never emit for those)."""

    window: Window
    score: float
    threshold: float
    alarm: bool
    shares: np.ndarray
    model_version: str
    event: dict[str, Any] | None = None
    replay: bool = False
    partition: tuple[str, int] | None = None  # the input partition the window's sensor is read from


class Stage:
    """The base of the worker's stages: every hook is a no-op until a stage overrides it.

    ``on_scored`` gets a step's scored windows, ``on_tick`` the processing clock once per step, ``on_late`` the
    sensors that just reached ``stream.n_late_report`` late readings within a minute, ``on_calibration`` a sensor's
    baseline calibration starting or ending, ``forget`` the sensors whose partitions moved away, ``evict`` the
    sensors the worker forgot after ``stream.sensor_ttl_s`` without a reading (drop what need not outlive their
    silence: memory stays bounded as sensors come and go), and ``close`` runs once when the worker stops, before
    its last flush.
    Each returns the messages to produce (sent before the step's offsets are committed). ``state`` returns the
    changelog records of what changed since it was last asked, each with the input partition its state belongs
    to (see the module docstring for when; a record of a partition that moves meanwhile is not written).
    """

    def on_scored(self, scored: list[Scored]) -> list[Outgoing]:
        return []

    def on_tick(self, now: float) -> list[Outgoing]:
        return []

    def on_late(self, reports: list[LateReport]) -> list[Outgoing]:
        return []

    def forget(self, sensors: Iterable[str]) -> None:
        return None

    def evict(self, sensors: Iterable[str]) -> None:
        return None

    def state(self) -> list[tuple[Partition, Outgoing]]:
        return []

    def close(self) -> list[Outgoing]:
        return []

    def delivered(self) -> None:
        """Every message this stage returned until its last ``state`` call, and those state records, are
        delivered; their offsets are committed next. What a stage keeps outside a changelog is saved here."""
        return None

    def on_assigned(self, parts: list[tuple[str, int]]) -> None:
        """Input partitions given to this worker, before their first record (restore their state here)."""
        return None

    def on_revoked(self, parts: list[tuple[str, int]]) -> None:
        """Input partitions taken from this worker (not at its own stop), after ``forget`` of the sensors it saw on
        them: drop what is left of theirs (sensors restored with them that sent nothing since)."""
        return None

    def topics(self) -> tuple[str, ...]:
        """The topics this stage may send to (but changelogs): the worker's producer learns them at start."""
        return ()

    def on_calibration(self, sensor: str, end_ms: int, baseline: Any) -> list[Outgoing]:
        """``sensor`` started calibrating its baseline (``baseline`` None) or finished it (a
        :class:`~aestream.detect.baselines.Baseline`), at its window ending at ``end_ms``."""
        return []
