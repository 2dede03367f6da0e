"""Which sensors drop many late readings: per-sensor counts over a period of processing time, each sensor reported
at most once a period. Pure; the clock is passed in.

A reading is late when it is not after its sensor's newest reading (:mod:`aestream.stream.windows`): a duplicate, a
producer retry, readings from two sources of one sensor interleaved, or a clock fault at the source. A few are
normal; a sensor that drops many is losing data and should say so.

>>> w = LateWatch(n_report=3, period_s=60.0)
>>> w.observe({"s": 2}, now=0.0), w.observe({"s": 2}, now=1.0, at_ms=1767225600000)
([], [LateReport(sensor='s', n_late=4, period_s=60.0, at_ms=1767225600000)])
>>> w.observe({"s": 9}, now=30.0), [r.n_late for r in w.observe({"s": 3}, now=61.0)]
([], [3])

A count that reaches ``n_report`` within a period of the sensor's last report waits, and is reported after it:

>>> w = LateWatch(n_report=3, period_s=60.0)
>>> w.observe({"s": 1}, now=0.0), [r.n_late for r in w.observe({"s": 2}, now=59.0)]
([], [3])
>>> w.observe({"s": 3}, now=61.0), w.due, w.observe({"s": 4}, now=100.0)
([], True, [])
>>> w.observe({}, now=119.0)
[LateReport(sensor='s', n_late=7, period_s=60.0, at_ms=0)]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["LATE_PERIOD_S", "LateReport", "LateWatch"]

LATE_PERIOD_S = 60.0


@dataclass(frozen=True)
class LateReport:
    """``sensor`` dropped ``n_late`` late readings within ``period_s`` of processing time; ``at_ms``: when that
    was seen (wall clock, ms since the epoch)."""

    sensor: str
    n_late: int
    period_s: float
    at_ms: int = 0


class _Count:
    __slots__ = ("n", "reported_at", "start")

    def __init__(self, start: float, reported_at: float = -math.inf) -> None:
        self.start, self.n, self.reported_at = start, 0, reported_at


class LateWatch:
    """Counts each sensor's late readings from its first one for ``period_s``; a sensor reaching ``n_report`` in
    that time is reported once, and counted afresh after the period. ``n_report = 0`` reports nothing.

    A count starts at the first late reading after the previous count's period, which may be just after a report
    made late in that period; so a report also waits until ``period_s`` after the sensor's last one, or a sensor
    steadily dropping readings would be reported twice within a second (the promise is once a period). A count
    held back so goes on counting, and is reported at the first step after that wait (``due`` says one is
    waiting), with the time it spans."""

    def __init__(self, n_report: int, period_s: float = LATE_PERIOD_S) -> None:
        self.n_report, self.period_s = n_report, period_s
        self._counts: dict[str, _Count] = {}
        # sensors whose count reached n_report, waiting out the last report's period (a dict: in the order they came)
        self._due: dict[str, None] = {}
        self._pruned_at = 0.0

    @property
    def due(self) -> bool:
        """Whether a count waits to be reported (:meth:`observe` reports it once its wait is over)."""
        return bool(self._due)

    def observe(self, late: Mapping[str, int], now: float, at_ms: int = 0) -> list[LateReport]:
        """Add one step's late readings per sensor; returns the sensors that reached ``n_report`` (and whose
        last report is ``period_s`` old) just now."""
        if not self.n_report:
            return []
        for sensor, n in late.items():
            c = self._counts.get(sensor)
            if c is None or (now - c.start >= self.period_s and sensor not in self._due):  # a due count goes on
                c = self._counts[sensor] = _Count(now, -math.inf if c is None else c.reported_at)
            c.n += n
            if c.n >= self.n_report and c.reported_at < c.start:  # once a count
                self._due[sensor] = None
        out = []
        for sensor in [s for s in self._due if now - self._counts[s].reported_at >= self.period_s]:  # once a period
            c = self._counts[sensor]
            c.reported_at = now
            del self._due[sensor]
            out.append(LateReport(sensor, c.n, max(self.period_s, now - c.start), at_ms))
        if now - self._pruned_at >= self.period_s:  # sensors with no late reading nor report for a period: forgotten
            self._pruned_at = now
            self._counts = {s: c for s, c in self._counts.items()
                            if s in self._due or now - max(c.start, c.reported_at) < self.period_s}
        return out

    def forget(self, sensors: Iterable[str]) -> None:
        for s in sensors:
            self._counts.pop(s, None)
            self._due.pop(s, None)
