"""Episodes: per sensor, the alarmed windows of one incident become one episode. Pure; time is event time.

The worker's k-of-n rule decides whether a window is in alarm; here, per sensor:

* ``opened``: the first alarmed window while no episode is open (and the sensor is out of cooldown);
* ``updated``: an alarmed window whose severity band is above the episode's (escalation only);
* ``resolved``: after ``n_resolve_windows`` consecutive windows not in alarm;
* cooldown: an alarm whose window ends less than ``cooldown_ms`` after the resolving window opens nothing
  (it is counted as suppressed);
* dedup: a window that does not end after the sensor's last one (a replay, a redelivery) changes nothing.

The episode id is a UUIDv5 of (sensor, opening window end), so a rebuild after a restart finds the same id.

>>> from aestream.alerts.routing import parse_bands
>>> t = EpisodeTracker(parse_bands({"warning": 1.0, "critical": 2.0}), n_resolve_windows=2, cooldown_ms=100)
>>> [x.kind if x else None for x in (t.observe("s", 0, 10, 1.5, True), t.observe("s", 5, 20, 3.0, True),
...  t.observe("s", 10, 30, 0.1, False), t.observe("s", 15, 40, 0.1, False), t.observe("s", 20, 50, 4.0, True))]
['opened', 'updated', None, 'resolved', None]
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aestream.alerts.routing import Bands

__all__ = ["Episode", "EpisodeTracker", "Transition", "episode_id"]

_NAMESPACE = uuid.UUID("0b7a7a53-8d1c-4f0e-b3d5-6a8e1c2f4d90")


def episode_id(sensor: str, opened_ms: int) -> str:
    """A UUIDv5 of (sensor, end of the opening window)."""
    return str(uuid.uuid5(_NAMESPACE, f"{sensor}\x1f{opened_ms}"))


@dataclass(slots=True)
class Episode:
    """One incident of one sensor. Times are window ends (ms, event time) unless named ``started_ms``."""

    episode_id: str
    sensor: str
    started_ms: int
    opened_ms: int
    severity: str
    peak_ratio: float
    peak_ms: int
    peak_channels: list[tuple[str, float]]
    last_alarm_ms: int
    n_windows: int = 1
    n_updates: int = 0
    n_normal: int = 0
    resolved_ms: int | None = None


@dataclass(frozen=True)
class Transition:
    """What a window did to its sensor's episode: ``kind`` is opened, updated or resolved."""

    kind: str
    episode: Episode  # a copy, taken at the transition


@dataclass(slots=True)
class _Sensor:  # one per sensor the worker holds: slots keep it at 64 B (a __dict__ would add ~300)
    last_end_ms: int = -1
    open: Episode | None = None
    cooldown_until_ms: int = -1
    n_suppressed: int = 0


class EpisodeTracker:
    """Per-sensor episode state; :meth:`observe` one window at a time, in each sensor's event-time order."""

    def __init__(self, bands: Bands, n_resolve_windows: int = 5, cooldown_ms: int = 0) -> None:
        self.bands, self.n_resolve_windows, self.cooldown_ms = bands, n_resolve_windows, cooldown_ms
        self._sensors: dict[str, _Sensor] = {}

    def observe(self, sensor: str, start_ms: int, end_ms: int, ratio: float, alarm: bool,
                channels: list[tuple[str, float]] | None = None) -> Transition | None:
        """Feed one scored window; returns the transition it caused, if any."""
        st = self._sensors.get(sensor)
        if st is None:
            st = self._sensors[sensor] = _Sensor()
        if end_ms <= st.last_end_ms:
            return None
        st.last_end_ms = end_ms
        ep = st.open
        if ep is None:
            if not alarm:
                return None
            if end_ms < st.cooldown_until_ms:
                st.n_suppressed += 1
                return None
            sev = self.bands.severity(ratio)
            ep = st.open = Episode(episode_id(sensor, end_ms), sensor, start_ms, end_ms, sev, ratio, end_ms,
                                   list(channels or []), end_ms)
            return Transition("opened", dataclasses.replace(ep))
        if not alarm:
            ep.n_normal += 1
            if ep.n_normal < self.n_resolve_windows:
                return None
            ep.resolved_ms = end_ms
            st.open = None
            st.cooldown_until_ms = end_ms + self.cooldown_ms
            return Transition("resolved", ep)
        ep.n_normal = 0
        ep.n_windows += 1
        ep.last_alarm_ms = end_ms
        if ratio > ep.peak_ratio:
            ep.peak_ratio, ep.peak_ms, ep.peak_channels = ratio, end_ms, list(channels or [])
        sev = self.bands.severity(ratio)
        if self.bands.rank(sev) <= self.bands.rank(ep.severity):
            return None
        ep.severity = sev
        ep.n_updates += 1
        return Transition("updated", dataclasses.replace(ep))

    def __contains__(self, sensor: object) -> bool:
        """Whether the tracker holds state of ``sensor``."""
        return sensor in self._sensors

    def open_episode(self, sensor: str) -> Episode | None:
        st = self._sensors.get(sensor)
        return st.open if st else None

    def n_suppressed(self, sensor: str) -> int:
        st = self._sensors.get(sensor)
        return st.n_suppressed if st else 0

    def open_episodes(self) -> list[Episode]:
        return [st.open for st in self._sensors.values() if st.open is not None]

    def forget(self, sensors: Iterable[str]) -> None:
        for s in sensors:
            self._sensors.pop(s, None)

    def evict(self, sensors: Iterable[str]) -> list[str]:
        """Forget those of ``sensors`` at rest: no open episode, no cooldown running at their last window (the
        others keep their state, so a sensor that comes back resolves its episode, or stays quiet through its
        cooldown, as if it had never gone). Returns the sensors forgotten.

        >>> from aestream.alerts.routing import parse_bands
        >>> t = EpisodeTracker(parse_bands({"warning": 1.0}), n_resolve_windows=1, cooldown_ms=100)
        >>> _ = t.observe("open", 0, 10, 2.0, True), t.observe("quiet", 0, 10, 0.1, False)
        >>> _ = t.observe("cooling", 0, 10, 2.0, True), t.observe("cooling", 5, 20, 0.1, False)
        >>> t.evict(["open", "quiet", "cooling", "unknown"]), sorted(t.snapshot())
        (['quiet'], ['cooling', 'open'])
        """
        out = []
        for s in sensors:
            st = self._sensors.get(s)
            if st is not None and st.open is None and st.cooldown_until_ms <= st.last_end_ms:
                del self._sensors[s]
                out.append(s)
        return out

    # -- persistence ------------------------------------------------------------------------------------------
    def snapshot(self, sensors: Iterable[str] | None = None) -> dict[str, Any]:
        """JSON-ready state of every sensor (or of ``sensors``, those it knows)."""
        keys = self._sensors if sensors is None else [s for s in sensors if s in self._sensors]
        return {s: {"last_end_ms": st.last_end_ms, "cooldown_until_ms": st.cooldown_until_ms,
                    "n_suppressed": st.n_suppressed,
                    "open": dataclasses.asdict(st.open) if st.open else None}
                for s, st in ((s, self._sensors[s]) for s in keys)}

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the state with a :meth:`snapshot` (``KeyError``/``TypeError`` on a malformed one)."""
        self._sensors = {}
        self.restore_sensors(data)

    def restore_sensors(self, data: dict[str, Any]) -> None:
        """Set these sensors' state from a :meth:`snapshot` of them, the others' staying as they are."""
        for s, d in data.items():
            ep = d["open"]
            if ep is not None:
                ep = Episode(**{**ep, "peak_channels": [(str(n), float(v)) for n, v in ep["peak_channels"]]})
            self._sensors[s] = _Sensor(int(d["last_end_ms"]), ep, int(d["cooldown_until_ms"]), int(d["n_suppressed"]))
