"""Alarm thresholds, calibrated on validation scores and kept outside the model, and the per-sensor alarm rule.

>>> round(quantile_threshold(np.arange(101.0), 0.9, factor=2.0), 6)
180.0
>>> rule = AlarmRule(threshold=1.0, k=2, n=3)
>>> [rule.update("s", x)[1] for x in (2.0, 0.0, 2.0, 2.0, 0.0, 0.0)]
[False, False, True, True, True, False]
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping

import numpy as np

from aestream.config import ThresholdConfig

__all__ = ["AlarmRule", "calibrate_threshold", "causal_smooth", "pot_threshold", "quantile_threshold"]


def quantile_threshold(scores: np.ndarray, quantile: float, factor: float = 1.0) -> float:
    """``factor`` × the ``quantile`` of ``scores``."""
    return float(np.quantile(np.asarray(scores, dtype=np.float64), quantile) * factor)


def pot_threshold(scores: np.ndarray, target_far: float, initial_quantile: float = 0.98) -> float:
    """Peaks over threshold: fit a generalised Pareto tail above ``initial_quantile`` and return the score that
    is exceeded with probability ``target_far`` (Siffer et al., 2017), by probability-weighted moments.

    Falls back to the empirical quantile when the tail has too few distinct peaks to fit.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64))
    t = float(np.quantile(s, initial_quantile))
    peaks = s[s > t] - t
    if target_far >= 1 - initial_quantile or len(peaks) < 10 or np.ptp(peaks) == 0:
        return float(np.quantile(s, 1 - target_far))
    # PWM estimators (Hosking & Wallis 1987): a0 = mean, a1 = E[X (1 - F(X))].
    n = len(peaks)
    a0 = peaks.mean()
    a1 = np.sum(peaks * (n - 1 - np.arange(n)) / (n - 1)) / n
    xi = 2.0 - a0 / (a0 - 2 * a1)  # shape, in the convention F(x) = 1 - (1 + xi x / sigma)^(-1/xi)
    sigma = 2 * a0 * a1 / (a0 - 2 * a1)
    ratio = target_far * len(s) / n
    if abs(xi) < 1e-6:
        return float(t - sigma * np.log(ratio))
    return float(t + sigma / xi * (ratio ** (-xi) - 1))


def causal_smooth(scores: np.ndarray, span: int) -> np.ndarray:
    """Trailing mean over the last ``span`` scores (the first ones average what is there).

    >>> causal_smooth(np.array([0.0, 3.0, 0.0, 3.0]), 2).tolist()
    [0.0, 1.5, 1.5, 1.5]
    """
    x = np.asarray(scores, dtype=np.float64)
    if span <= 1:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - span, 0)
    return (c[idx] - c[lo]) / (idx - lo)


class _SensorAlarm:
    """One sensor's rule state, kept for every sensor the worker holds: its last ``smoothing - 1`` scores (oldest
    first; none without smoothing) and its last ``n`` threshold crossings as the bits of an int (the newest lowest).
    About 70 B with the default rule, where two deques took 1.5 KB."""

    __slots__ = ("flags", "scores")

    def __init__(self, scores: tuple[float, ...] = (), flags: int = 0) -> None:
        self.scores = scores
        self.flags = flags


class AlarmRule:
    """Per-sensor causal smoothing of the score, then a k-of-n rule over threshold crossings.

    ``update`` returns the smoothed score and whether the sensor is in alarm after this window. ``sensor_factors``
    maps sensor-id globs to a factor of the threshold for the sensors they match (the first match wins).

    >>> AlarmRule(2.0, sensor_factors={"pump-*": 1.5}).threshold_for("pump-7")
    3.0
    """

    def __init__(self, threshold: float, k: int = 1, n: int = 1, smoothing: int = 1,
                 sensor_factors: dict[str, float] | None = None) -> None:
        if not 1 <= k <= n:
            raise ValueError(f"k-of-n rule needs 1 <= k <= n, got k={k}, n={n}")
        self.threshold, self.k, self.n, self.smoothing = threshold, k, n, smoothing
        self.sensor_factors = dict(sensor_factors or {})
        self._mask = (1 << n) - 1  # the bits of the last n crossings
        self._state: dict[str, _SensorAlarm] = {}
        self._flagged: set[str] = set()  # sensors with a crossing among their last n: the state a checkpoint carries
        self._thresholds: dict[str, float] = {}
        self._own: set[str] = set()  # sensors with a threshold of their own (set_threshold)

    def threshold_for(self, sensor: str) -> float:
        """The threshold of ``sensor``: the calibrated one, times its factor when a glob matches it."""
        t = self._thresholds.get(sensor)
        if t is None:
            if not self.sensor_factors:  # the shared threshold: nothing to keep per sensor
                return self.threshold
            factor = next((f for g, f in self.sensor_factors.items() if fnmatch.fnmatchcase(sensor, g)), 1.0)
            t = self._thresholds[sensor] = self.threshold * float(factor)
        return t

    def _sensor(self, sensor: str) -> _SensorAlarm:
        st = self._state.get(sensor)
        if st is None:
            st = self._state[sensor] = _SensorAlarm()
        return st

    def set_threshold(self, sensor: str, threshold: float) -> None:
        """Give ``sensor`` its own calibrated threshold (its baseline's); a matching glob factor still applies.

        >>> r = AlarmRule(2.0, sensor_factors={"pump-*": 1.5})
        >>> r.set_threshold("pump-7", 4.0); r.threshold_for("pump-7"), r.threshold_for("fan-1")
        (6.0, 2.0)
        """
        factor = next((f for g, f in self.sensor_factors.items() if fnmatch.fnmatchcase(sensor, g)), 1.0)
        self._thresholds[sensor] = threshold * float(factor)
        self._own.add(sensor)

    def _limit(self, sensor: str) -> float:
        """The threshold the smoothed score of ``sensor`` is compared with (no lookup when no sensor has its own)."""
        return self.threshold_for(sensor) if self.sensor_factors or self._own else self.threshold

    def update(self, sensor: str, score: float) -> tuple[float, bool]:
        st = self._sensor(sensor)
        span = (*st.scores, score)
        smoothed = sum(span) / len(span)
        st.scores = span[max(len(span) - self.smoothing + 1, 0) :] if self.smoothing > 1 else ()
        st.flags = ((st.flags << 1) | int(smoothed > self._limit(sensor))) & self._mask
        if st.flags:
            self._flagged.add(sensor)
        else:
            self._flagged.discard(sensor)
        return smoothed, st.flags.bit_count() >= self.k

    def update_many(self, sensor: str, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`update` for each of one sensor's consecutive ``scores`` at once: the smoothed scores and the
        alarm after each.

        >>> a, b = AlarmRule(1.0, k=2, n=3, smoothing=2), AlarmRule(1.0, k=2, n=3, smoothing=2)
        >>> xs = [2.0, 0.0, 3.0, 2.0, 0.0, 0.0, 5.0]
        >>> one = [a.update("s", x) for x in xs]
        >>> sm, al = b.update_many("s", np.array(xs[:3]))
        >>> sm2, al2 = b.update_many("s", np.array(xs[3:]))
        >>> one == list(zip(np.concatenate([sm, sm2]).tolist(), np.concatenate([al, al2]).tolist()))
        True
        """
        st = self._sensor(sensor)
        p = len(st.scores)
        x = np.concatenate([np.fromiter(st.scores, np.float64, p), np.asarray(scores, dtype=np.float64)])
        w = self.smoothing
        if w == 1:
            smoothed = x[p:]
        else:  # window sums, not differences of a running sum: a capped score must not swamp the ones after it
            padded = np.concatenate([np.zeros(w - 1), x])
            sums = np.lib.stride_tricks.sliding_window_view(padded, w)[p:].sum(axis=1)
            smoothed = sums / np.minimum(np.arange(p + 1, len(x) + 1), w)
        over = smoothed > self._limit(sensor)
        q = self.n  # the last n crossings, oldest first (a window before the sensor's first counts as none)
        past = np.array([(st.flags >> (q - 1 - i)) & 1 for i in range(q)], dtype=np.int64)
        f = np.concatenate([past, over.astype(np.int64)])
        cf = np.concatenate([[0], np.cumsum(f)])
        jf = np.arange(q + 1, len(f) + 1)
        alarm = (cf[jf] - cf[np.maximum(jf - self.n, 0)]) >= self.k
        st.scores = tuple(x[max(len(x) - w + 1, 0) :].tolist()) if w > 1 else ()
        flags = 0
        for bit in f[-self.n :].tolist():
            flags = (flags << 1) | bit
        st.flags = flags
        if flags:
            self._flagged.add(sensor)
        else:
            self._flagged.discard(sensor)
        return smoothed, alarm

    def states(self, limit: int | None = None) -> dict[str, tuple[int, tuple[float, ...]]] | None:
        """The state of each sensor with a crossing among its last ``n`` windows: ``(bits, last scores)``, what a
        replay shorter than ``n`` windows could not rebuild (:mod:`aestream.stream.phase` commits it); ``None``
        when there are more than ``limit`` such sensors."""
        if limit is not None and len(self._flagged) > limit:
            return None
        return {s: (st.flags, st.scores) for s in self._flagged if (st := self._state.get(s)) is not None}

    def restore(self, states: Mapping[str, tuple[int, tuple[float, ...]]], sensors: Iterable[str]) -> None:
        """Set the ``states`` committed with a partition's offsets (its sensors in or near an alarm then), and
        clear the crossings of its other ``sensors``, as they stood at that commit; their last scores stay the
        replay's.

        >>> r = AlarmRule(1.0, k=1, n=3)
        >>> r.update("a", 5.0), r.update("b", 5.0)
        ((5.0, True), (5.0, True))
        >>> r.restore({"c": (0b010, ())}, ["a", "b", "c"])  # "c" crossed in the window before the last
        >>> r.update("a", 0.0), r.update("c", 0.0), r.update("c", 0.0)
        ((0.0, False), (0.0, True), (0.0, False))
        """
        for s in sensors:
            if s not in states and (st := self._state.get(s)) is not None:
                st.flags = 0
                self._flagged.discard(s)
        for s, (flags, scores) in states.items():
            st = self._sensor(s)
            st.flags = flags & self._mask
            if self.smoothing > 1:
                st.scores = tuple(scores)[-(self.smoothing - 1):] if scores else st.scores
            if st.flags:
                self._flagged.add(s)
            else:
                self._flagged.discard(s)

    def carry(self, previous: AlarmRule) -> bool:
        """Take over ``previous``'s per-sensor state when its rule is the same (``k``, ``n``, ``smoothing``), so an
        episode in progress neither closes nor reopens at a model swap; its smoothed scores are rescaled by the
        ratio of the two thresholds (each keeps its ratio to the threshold). Returns whether it did.

        >>> old = AlarmRule(1.0, k=2, n=2)
        >>> old.update("s", 3.0)
        (3.0, False)
        >>> new = AlarmRule(2.0, k=2, n=2)
        >>> new.carry(old), new.update("s", 2.5)
        (True, (2.5, True))
        """
        if (self.k, self.n, self.smoothing) != (previous.k, previous.n, previous.smoothing):
            return False
        for sensor, st in previous._state.items():  # each sensor by its own thresholds (a baseline's, a glob's)
            before = previous._limit(sensor)
            scale = self._limit(sensor) / before if before > 0 else 1.0
            if not np.isfinite(scale) or scale <= 0:
                scale = 1.0
            self._state[sensor] = _SensorAlarm(tuple(x * scale for x in st.scores), st.flags)
        self._flagged = set(previous._flagged)
        return True

    def drop(self, sensors: list[str] | set[str]) -> None:
        """Forget these sensors altogether (their partitions moved away, with their baselines)."""
        for s in sensors:
            self._state.pop(s, None)
            self._flagged.discard(s)
            self._thresholds.pop(s, None)
            self._own.discard(s)

    def rest(self, sensors: list[str] | set[str]) -> None:
        """Forget the alarm state of sensors idle past ``stream.sensor_ttl_s``; a threshold of their own stays, as
        the baseline it comes from does, for when they come back.

        >>> r = AlarmRule(2.0); r.set_threshold("pump-7", 4.0); r.update("pump-7", 5.0)
        (5.0, True)
        >>> r.rest(["pump-7"]); r.threshold_for("pump-7"), r.update("pump-7", 3.0)
        (4.0, (3.0, False))
        """
        for s in sensors:
            self._state.pop(s, None)
            self._flagged.discard(s)
            if s not in self._own:
                self._thresholds.pop(s, None)

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """The rule over one sensor's whole score series at once (for offline evaluation)."""
        smoothed = causal_smooth(scores, self.smoothing)
        over = (smoothed > self.threshold).astype(np.int64)
        c = np.cumsum(np.insert(over, 0, 0))
        idx = np.arange(1, len(over) + 1)
        return (c[idx] - c[np.maximum(idx - self.n, 0)]) >= self.k


def calibrate_threshold(validation_scores: np.ndarray, cfg: ThresholdConfig) -> float:
    """The alarm threshold for (causally smoothed) validation scores of normal windows: their ``quantile`` times
    ``factor``, or with ``method = "pot"`` the score exceeded at rate ``target_far`` (no factor: the rate is the
    setting).

    >>> calibrate_threshold(np.linspace(0, 1, 1001), ThresholdConfig(quantile=0.9, factor=2.0))
    1.8
    """
    smoothed = causal_smooth(validation_scores, cfg.smoothing)
    if cfg.method == "pot":
        return pot_threshold(smoothed, cfg.target_far, cfg.pot_initial_quantile)
    return round(quantile_threshold(smoothed, cfg.quantile, cfg.factor), 12)
