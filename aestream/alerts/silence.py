"""Data quality: which sensors went silent and which came back. Pure; the clock is passed in.

A sensor is silent when no window of it has closed for ``silent_after_s`` of processing time, or (when
``silent_lag_ms`` is set) when its last window ends more than ``silent_lag_ms`` before the newest window end of
any sensor (event time: useful when a backlog is replayed fast). Each silence is reported once
(``sensor_silent``), and its end once (``sensor_resumed``, on the sensor's next live window: a replayed one, which
emits nothing, leaves it silent). A sensor restored from the changelog is judged in event time only once its own
window came back, or ``silent_lag_ms`` of live event time passed without one (:meth:`SilenceWatch.restore_sensor`).

>>> w = SilenceWatch(silent_after_s=10.0)
>>> w.seen("s", 1000, now=0.0), w.check(now=5.0), [x.kind for x in w.check(now=11.0)], w.check(now=30.0)
(None, [], ['sensor_silent'], [])
>>> w.seen("s", 60000, now=31.0).kind
'sensor_resumed'
>>> off = SilenceWatch()  # off: nothing is kept per sensor
>>> off.seen("s", 1000, now=0.0), off.check(now=1e9), off.snapshot()["sensors"]
(None, [], {})
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Quality", "SilenceWatch"]


@dataclass(frozen=True)
class Quality:
    """A data-quality transition: ``kind`` is ``sensor_silent`` or ``sensor_resumed``."""

    kind: str
    sensor: str
    last_window_end_ms: int
    silent_for_s: float
    detected_by: str  # "processing_time" or "event_time"
    resumed_window_end_ms: int | None = None


@dataclass(slots=True)
class _Seen:
    end_ms: int
    at: float
    silent: bool = False
    silent_at: float = 0.0
    restored: bool = False  # end_ms comes from the changelog, not from a window seen since
    grace_from_ms: int | None = None  # restored: the live event time its lag is measured from, once known


class SilenceWatch:
    """Per-sensor last window end (event time) and when it was seen (processing time)."""

    def __init__(self, silent_after_s: float = 0.0, silent_lag_ms: int = 0) -> None:
        self.silent_after_s, self.silent_lag_ms = silent_after_s, silent_lag_ms
        self._sensors: dict[str, _Seen] = {}
        self._watermark_ms = -1
        self._live_ms = -1  # the newest end of a window that was not replayed

    @property
    def enabled(self) -> bool:
        return self.silent_after_s > 0 or self.silent_lag_ms > 0

    def seen(self, sensor: str, end_ms: int, now: float, replay: bool = False) -> Quality | None:
        """A window of ``sensor`` closed (``replay``: read again to rebuild state after a partition move); returns
        ``sensor_resumed`` if it had been reported silent. Off (``silent_after_s`` and ``silent_lag_ms`` both 0),
        it keeps nothing: no per-sensor memory for a check that never runs."""
        if not self.enabled:
            return None
        st = self._sensors.get(sensor)
        self._watermark_ms = max(self._watermark_ms, end_ms)
        if not replay:
            self._live_ms = max(self._live_ms, end_ms)
        if st is None:
            self._sensors[sensor] = _Seen(end_ms, now)
            return None
        if end_ms <= st.end_ms:  # a replayed or redelivered window says nothing about the sensor now
            return None
        if replay and st.silent:
            # where the sensor was, not that it is back (a replay emits nothing): its first live window ends the
            # silence, and its sensor_resumed is sent then
            return None
        was_silent, last = st.silent, st.end_ms
        st.end_ms, st.at, st.silent, st.restored = end_ms, now, False, False
        if not was_silent:
            return None
        return Quality("sensor_resumed", sensor, last, max(0.0, now - st.silent_at), "processing_time", end_ms)

    def check(self, now: float) -> list[Quality]:
        """The sensors that became silent since the last check."""
        if not self.enabled:
            return []
        out = []
        for sensor, st in self._sensors.items():
            if st.silent:
                continue
            by = None
            if self.silent_after_s > 0 and now - st.at > self.silent_after_s:
                by = "processing_time"
            elif self.silent_lag_ms > 0 and self._lag_ms(st) > self.silent_lag_ms:
                by = "event_time"
            if by:
                st.silent, st.silent_at = True, now
                out.append(Quality("sensor_silent", sensor, st.end_ms, round(now - st.at, 3), by))
        return out

    def _lag_ms(self, st: _Seen) -> int:
        """How far ``st`` is behind in event time. A restored sensor is behind the live event time from its first
        check after a live window (its grace starts there), or from its own end if newer; 0 before."""
        if not st.restored:
            return self._watermark_ms - st.end_ms
        if self._live_ms < 0:
            return 0
        if st.grace_from_ms is None:
            st.grace_from_ms = self._live_ms
        return self._live_ms - max(st.end_ms, st.grace_from_ms)

    def forget(self, sensors: Iterable[str]) -> None:
        for s in sensors:
            self._sensors.pop(s, None)

    def evict(self, sensors: Iterable[str]) -> list[str]:
        """Forget those of ``sensors`` not reported silent (one that was keeps its state until it resumes, so its
        ``sensor_resumed`` comes); returns the sensors forgotten."""
        out = []
        for s in sensors:
            st = self._sensors.get(s)
            if st is not None and not st.silent:
                del self._sensors[s]
                out.append(s)
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"watermark_ms": self._watermark_ms,
                "sensors": {s: {"end_ms": st.end_ms, "silent": st.silent} for s, st in self._sensors.items()}}

    def sensor_state(self, sensor: str) -> dict[str, Any] | None:
        st = self._sensors.get(sensor)
        return None if st is None else {"end_ms": st.end_ms, "silent": st.silent}

    def restore_sensor(self, sensor: str, d: dict[str, Any], now: float) -> None:
        """Set one sensor's state (seen at ``now``: processing time does not persist).

        Its ``end_ms`` is not trusted for the event-time check: the changelog gets a sensor's state only when it
        has an event, so the saved end may be hours older than the windows it sent since, which the partition's
        replay brings back only after the first checks. Judged against the newest restored window of another
        sensor, it would be reported silent, then quietly cleared by its replayed windows (a replay emits
        nothing), with no ``sensor_resumed``. So the sensor's lag counts only once its own window comes (replayed
        or live), or from the live event time of its first check after a live window: a sensor that really is
        silent is still reported, ``silent_lag_ms`` of live event time later. Waiting for live windows of its own
        partition instead would never judge the sensors of a partition that went quiet as a whole."""
        self._sensors[sensor] = _Seen(int(d["end_ms"]), now, bool(d["silent"]), now, restored=True)
        self._watermark_ms = max(self._watermark_ms, int(d["end_ms"]))

    def restore(self, data: dict[str, Any], now: float) -> None:
        """Restore a :meth:`snapshot`; every sensor counts as seen at ``now`` (processing time does not persist)."""
        self._watermark_ms = int(data["watermark_ms"])
        self._sensors = {s: _Seen(int(d["end_ms"]), now, bool(d["silent"]), now)
                         for s, d in data["sensors"].items()}
