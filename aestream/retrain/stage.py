"""Feeds the normal-data reservoir from the worker's scored windows, by rules kept per sensor on event time.

* **Sampling**: of a sensor's windows, at most one per ``sample_interval_s`` of event time is a candidate; the
  others are never held. A sensor therefore holds at most ``guard_s / sample_interval_s + 1`` windows waiting out
  the guard (two at the defaults, one most of the time), whatever its rate: this bounds the worker's memory per sensor.
* A window scored **normal** is admitted once the sensor's newer windows start ``guard_s`` after its end with
  no alarm, and only if no alarm window ended within ``guard_s`` before its start: windows next to an anomaly
  (its onset before detection, its tail after) never count as normal.
* A window in **alarm** opens (or extends) the sensor's alarm episode; an episode ends after ``guard_s`` of event
  time without alarm, whether windows came meanwhile or the sensor was silent: an alarm window that starts after
  that opens a new episode (one reaching back within ``guard_s`` of the last alarm extends it, however far apart
  a slow sensor's windows end). A short episode's windows are discarded.
* **Sustained shift**: an episode that lasts ``regime_change_after_s`` is taken for a regime change (a sensor
  serviced, recalibrated, moved to another operating point): the episode's windows from its start on, and every
  later window of the sensor while the episode lasts, are admitted, so the next retrain learns the new regime
  and its false alarms stop. A genuine fault shorter than ``regime_change_after_s`` is never learned as normal;
  set it above the longest fault you expect to leave unattended.
* Replayed windows (a partition's lookback, after a restart or a move) were already offered by their previous
  owner: none is held or admitted again, but their alarms rebuild the sensor's episode, so the guard and the
  regime-change clock run on across the move (from as far back as the lookback reaches).

Admitted windows go to a local :class:`Reservoir` (``fleet.retrain_in = "worker"``; ``on_tick`` expires old windows
and saves it every ``save_every_s``) or, given a ``topic``, out as messages of the step (``"trainer"``): key = the
sensor, value = the window as ``.npy`` bytes (float32, ``window_size`` × channels), header ``aestream.end_ms``.
They are sent before the step's offsets are committed, so a window is offered at least once.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aestream.retrain.reservoir import Reservoir
from aestream.stream.messages import Outgoing
from aestream.stream.stages import Scored, Stage
from aestream.stream.windows import Window

__all__ = ["END_MS_HEADER", "ReservoirStage", "decode_window", "encode_window"]

log = logging.getLogger(__name__)

END_MS_HEADER = "aestream.end_ms"


def encode_window(values: np.ndarray) -> bytes:
    """A window's values as ``.npy`` bytes (float32; no pickle on either side).

    >>> decode_window(encode_window(np.ones((2, 3)))).tolist()
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    buf = io.BytesIO()
    np.save(buf, np.asarray(values, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def decode_window(data: bytes | None) -> np.ndarray:
    """The values :func:`encode_window` wrote; anything else (empty, null, an ``.npz``) raises ``ValueError``."""
    if not data:
        raise ValueError("an empty message")
    try:
        values = np.load(io.BytesIO(data), allow_pickle=False)
    except (EOFError, OSError, ValueError) as e:
        raise ValueError(f"not a .npy array: {e}") from None
    if not isinstance(values, np.ndarray):
        raise ValueError(f"a window is a 2-d float32 array, not {type(values).__name__}")
    if values.ndim != 2 or values.dtype != np.float32:
        raise ValueError(f"a window is a 2-d float32 array, not {values.ndim}-d {values.dtype}")
    return values


@dataclass(slots=True)
class _Track:
    """One sensor's state: normal windows waiting out the guard (oldest first), and the alarm episode, if any.
    Kept for every sensor the worker holds, so it is small: slots, and plain lists (an empty ``deque`` is 760 B)."""

    pending: list[Window] = field(default_factory=list)
    last_sample_ms: int | None = None
    episode_start_ms: int | None = None
    last_alarm_ms: int | None = None
    episode: list[Window] = field(default_factory=list)
    regime_change: bool = False


class ReservoirStage(Stage):
    """The :class:`~aestream.stream.stages.Stage` that offers eligible windows to a :class:`Reservoir`."""

    def __init__(
        self,
        reservoir: Reservoir | None,
        *,
        guard_s: float,
        regime_change_after_s: float,
        sample_interval_s: float = 0.0,
        topic: str | None = None,
        path: str | os.PathLike[str] | None = None,
        save_every_s: float = 60.0,
    ) -> None:
        if (reservoir is None) == (topic is None):
            raise ValueError("a ReservoirStage feeds either a reservoir or a topic")
        self.reservoir = reservoir
        self.topic = topic
        self.guard_ms = int(guard_s * 1000)
        self.regime_ms = int(regime_change_after_s * 1000)
        self.sample_ms = int(sample_interval_s * 1000)
        self.path = Path(path) if path is not None else None
        self.save_every_s = save_every_s
        self._tracks: dict[str, _Track] = {}
        self._last_save: float | None = None
        self._out: list[Outgoing] = []

    def on_scored(self, scored: list[Scored]) -> list[Outgoing]:
        for s in scored:
            if s.replay:
                self.recall(s.window, s.alarm)
            else:
                self.offer(s.window, s.alarm)
        out, self._out = self._out, []
        return out

    def topics(self) -> tuple[str, ...]:
        return (self.topic,) if self.topic else ()

    def forget(self, sensors: Iterable[str]) -> None:
        for sensor in sensors:  # their partitions moved: the new owner offers their windows from now on
            self._tracks.pop(sensor, None)

    def evict(self, sensors: Iterable[str]) -> None:
        """Idle sensors: their pending samples go unadmitted (no later window can clear their guard) and their
        alarm episodes end."""
        self.forget(sensors)

    def on_tick(self, now: float) -> list[Outgoing]:
        if self.reservoir is None:
            return []
        if self._last_save is None:
            self._last_save = now
        elif now - self._last_save >= self.save_every_s:
            self._last_save = now
            self.save()
        return []

    def save(self) -> None:
        """Expire old windows and persist the reservoir (when a path was given). A write that fails (a full disk)
        is logged and tried again at the next save: the reservoir stays in memory, and the stream goes on."""
        if self.reservoir is None:
            return
        self.reservoir.expire()
        if self.path is not None:
            try:
                self.reservoir.save(self.path)
            except OSError as e:
                log.warning("could not save the retraining reservoir to %s (%s): kept in memory, tried again in "
                            "%.0f s", self.path, e, self.save_every_s)

    @property
    def n_pending(self) -> int:
        """Windows of all sensors waiting out the guard (held in memory, not yet admitted)."""
        return sum(len(t.pending) for t in self._tracks.values())

    def in_regime_change(self, sensor: str) -> bool:
        """Whether ``sensor`` is in an alarm episode taken for a regime change."""
        track = self._tracks.get(sensor)
        return bool(track and track.regime_change)

    def offer(self, w: Window, alarm: bool) -> None:
        """Apply the rules of the module docstring to one scored window of ``w.sensor``."""
        t = self._track(w, alarm)
        if alarm:
            self._on_alarm(t, w)
        elif t.regime_change:
            if self._sampled(t, w):
                self._admit(w)
        elif (t.last_alarm_ms is None or w.start_ms - t.last_alarm_ms > self.guard_ms) and self._sampled(t, w):
            t.pending.append(w._replace(values=w.values.copy()))  # not a view that pins a whole batch
        n_due = 0
        while n_due < len(t.pending) and t.pending[n_due].end_ms + self.guard_ms <= w.start_ms:
            n_due += 1  # no later alarm can reach it
        if n_due:
            for old in t.pending[:n_due]:
                self._admit(old)
            del t.pending[:n_due]

    def recall(self, w: Window, alarm: bool) -> None:
        """Take one replayed window of ``w.sensor`` into its alarm episode, holding and admitting nothing: a new
        owner's live windows then keep ``guard_s`` from the alarms its replay saw, and an episode that began before
        the move counts towards ``regime_change_after_s`` from there."""
        t = self._track(w, alarm)
        if alarm and w.end_ms - self._alarmed(t, w) >= self.regime_ms:
            t.regime_change = True  # its windows so far were the previous owner's to admit

    def _track(self, w: Window, alarm: bool) -> _Track:
        """``w.sensor``'s state, its episode ended when ``w`` comes over ``guard_s`` after the episode's last alarm."""
        t = self._tracks.setdefault(w.sensor, _Track())
        if t.last_alarm_ms is not None and (w.start_ms if alarm else w.end_ms) - t.last_alarm_ms > self.guard_ms:
            # the episode is over, whatever came since its last alarm (a silence too): an alarm now opens another.
            # An alarm window that reaches back within guard_s of the last one continues it, however far apart a
            # slow sensor's windows end
            t.episode_start_ms, t.episode, t.regime_change = None, [], False
        return t

    def _alarmed(self, t: _Track, w: Window) -> int:
        """Drop what ``w``'s alarm makes too close to an anomaly, and return the episode's start."""
        while t.pending and t.pending[-1].end_ms >= w.start_ms - self.guard_ms:
            t.pending.pop()  # too close before the anomaly's onset
        if t.episode_start_ms is None:
            t.episode_start_ms = w.end_ms
        t.last_alarm_ms = w.end_ms
        return t.episode_start_ms

    def _on_alarm(self, t: _Track, w: Window) -> None:
        start = self._alarmed(t, w)
        if t.regime_change:
            if self._sampled(t, w):
                self._admit(w)
            return
        if self._sampled(t, w):
            t.episode.append(w._replace(values=w.values.copy()))
        if w.end_ms - start >= self.regime_ms:
            t.regime_change = True
            log.info("sensor %s has been in alarm for %.0f s (retrain.regime_change_after_s = %.0f): taken for a "
                     "regime change, its windows now feed the reservoir", w.sensor, (w.end_ms - start) / 1000,
                     self.regime_ms / 1000)
            for old in t.episode:
                if old.start_ms >= start:
                    self._admit(old)
            t.episode = []

    def _sampled(self, t: _Track, w: Window) -> bool:
        """Whether ``w`` is its sensor's next sample (at most one per ``sample_interval_s``)."""
        if t.last_sample_ms is not None and w.end_ms - t.last_sample_ms < self.sample_ms:
            return False
        t.last_sample_ms = w.end_ms
        return True

    def _admit(self, w: Window) -> None:
        if self.reservoir is not None:
            self.reservoir.add(w.sensor, w.end_ms, w.values)
        else:
            assert self.topic is not None
            self._out.append(Outgoing(self.topic, encode_window(w.values), w.sensor.encode(),
                                      [(END_MS_HEADER, str(w.end_ms).encode())]))
