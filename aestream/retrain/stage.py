"""Feeds the normal-data reservoir from the worker's scored windows, by rules kept per sensor on event time.

* A window scored **normal** is admitted once the sensor's newer windows start ``guard_s`` after its end with
  no alarm, and only if no alarm window ended within ``guard_s`` before its start: windows next to an anomaly
  (its onset before detection, its tail after) never count as normal.
* A window in **alarm** opens (or extends) the sensor's alarm episode; an episode ends after ``guard_s`` without
  alarm. A short episode's windows are discarded.
* **Sustained shift**: an episode that lasts ``regime_change_after_s`` is taken for a regime change (a sensor
  serviced, recalibrated, moved to another operating point): the episode's windows from its start on, and every
  later window of the sensor while the episode lasts, are admitted, so the next retrain learns the new regime
  and its false alarms stop. A genuine fault shorter than ``regime_change_after_s`` is never learned as normal;
  set it above the longest fault you expect to leave unattended.
* Replayed windows (rebuild after a partition move) were already offered by their previous owner: skipped.

The stage emits no messages. ``on_tick`` expires old windows and saves the reservoir every ``save_every_s``.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from aestream.retrain.reservoir import Reservoir
from aestream.stream.messages import Outgoing
from aestream.stream.stages import Scored, Stage
from aestream.stream.windows import Window

__all__ = ["ReservoirStage"]

log = logging.getLogger(__name__)


@dataclass
class _Track:
    """One sensor's state: normal windows waiting out the guard, and the alarm episode, if any."""

    pending: deque[Window] = field(default_factory=deque)
    episode_start_ms: int | None = None
    last_alarm_ms: int | None = None
    episode: list[Window] = field(default_factory=list)
    regime_change: bool = False


class ReservoirStage(Stage):
    """The :class:`~aestream.stream.stages.Stage` that offers eligible windows to a :class:`Reservoir`."""

    def __init__(
        self,
        reservoir: Reservoir,
        *,
        guard_s: float,
        regime_change_after_s: float,
        path: str | os.PathLike[str] | None = None,
        save_every_s: float = 60.0,
    ) -> None:
        self.reservoir = reservoir
        self.guard_ms = int(guard_s * 1000)
        self.regime_ms = int(regime_change_after_s * 1000)
        self.path = Path(path) if path is not None else None
        self.save_every_s = save_every_s
        self._tracks: dict[str, _Track] = {}
        self._last_save: float | None = None

    def on_scored(self, scored: list[Scored]) -> list[Outgoing]:
        for s in scored:
            if not s.replay:
                self.offer(s.window, s.alarm)
        return []

    def on_tick(self, now: float) -> list[Outgoing]:
        if self._last_save is None:
            self._last_save = now
        elif now - self._last_save >= self.save_every_s:
            self._last_save = now
            self.save()
        return []

    def save(self) -> None:
        """Expire old windows and persist the reservoir (when a path was given)."""
        self.reservoir.expire()
        if self.path is not None:
            self.reservoir.save(self.path)

    def in_regime_change(self, sensor: str) -> bool:
        """Whether ``sensor`` is in an alarm episode taken for a regime change."""
        track = self._tracks.get(sensor)
        return bool(track and track.regime_change)

    def offer(self, w: Window, alarm: bool) -> None:
        """Apply the rules of the module docstring to one scored window of ``w.sensor``."""
        t = self._tracks.setdefault(w.sensor, _Track())
        if t.last_alarm_ms is not None and not alarm and w.end_ms - t.last_alarm_ms > self.guard_ms:
            t.episode_start_ms, t.episode, t.regime_change = None, [], False  # the episode is over
        if alarm:
            self._on_alarm(t, w)
        elif t.regime_change:
            self._admit(w)
        elif t.last_alarm_ms is None or w.start_ms - t.last_alarm_ms > self.guard_ms:
            t.pending.append(w)
        while t.pending and t.pending[0].end_ms + self.guard_ms <= w.start_ms:  # no later alarm can reach it
            self._admit(t.pending.popleft())

    def _on_alarm(self, t: _Track, w: Window) -> None:
        while t.pending and t.pending[-1].end_ms >= w.start_ms - self.guard_ms:
            t.pending.pop()  # too close before the anomaly's onset
        if t.episode_start_ms is None:
            t.episode_start_ms = w.end_ms
        t.last_alarm_ms = w.end_ms
        if t.regime_change:
            self._admit(w)
            return
        t.episode.append(w)
        if w.end_ms - t.episode_start_ms >= self.regime_ms:
            t.regime_change = True
            log.info("sensor %s has been in alarm for %.0f s (retrain.regime_change_after_s = %.0f): taken for a "
                     "regime change, its windows now feed the reservoir", w.sensor,
                     (w.end_ms - t.episode_start_ms) / 1000, self.regime_ms / 1000)
            for old in t.episode:
                if old.start_ms >= t.episode_start_ms:
                    self._admit(old)
            t.episode = []

    def _admit(self, w: Window) -> None:
        self.reservoir.add(w.sensor, w.end_ms, w.values)
