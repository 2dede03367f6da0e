"""Per-sensor baselines: each sensor judged against its own operating point.

A fleet's sensors run at different operating points, so one scaler and one threshold cannot serve them all. The
shared model (the fleet's) stays; each sensor gets its own

* **input scaling**: the mean and standard deviation of each channel over its first ``n_readings`` readings (event
  time); its windows reach the model standardised by these instead of the fleet's;
* **error scaling**: each channel's mean reconstruction error over its calibration windows (so a channel the
  model reconstructs poorly for this sensor does not dominate its score);
* **threshold**: calibrated on the scores of its calibration windows, by the ``[threshold]`` rule.

While a sensor calibrates its windows are collected, not scored, and emit nothing. Its calibration readings are
each window's readings that no window of it before held (all of a window after a gap, which starts a new run), so
they run on without a reading twice or one left out, with a count stride, an event-time one, or across a restored
phase; and the windows it judges next start where calibration ended. A baseline belongs to the model version it
was calibrated with: after a swap the sensor keeps being judged by the old scales while the errors of its next
normal windows under the new model are gathered; then its error scaling and threshold are refitted from them (the
input scaling stays).

A sensor's next owner (a restart, a partition move) restores its baseline from the changelog. One made under another
``stream.channels`` or ``stream.window_size`` cannot judge its windows: it is dropped and the sensor calibrates again.
One written before its background fine-tune finished has no own model, and that fine-tune went with the old owner:
the shared model judges the sensor while its next ``n_readings`` readings are gathered, as a calibration takes them,
for a new fine-tune.

A sensor with its own model keeps it through a swap, so a retrain reaches it only by a new fine-tune
(:meth:`SensorBaselines.renew`): it gathers its next ``n_readings`` readings the same way, judged by its own model
meanwhile, and is fine-tuned from the new shared model. Readings of a fault are not learned, by the retraining
stage's rule (:mod:`aestream.retrain.stage`): an alarm window drops what its sensor gathered, unless the sensor has
been alarming for ``retrain.regime_change_after_s``, which makes it a regime change, learned.

>>> import numpy as np
>>> b = Baseline(mean=np.array([10.0]), std=np.array([2.0]), channel_scale=np.array([1.0]), threshold=3.0,
...              model_version="v0001", n_readings=400)
>>> Baseline.from_dict(b.to_dict()) == b
True
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from aestream.config import BaselinesConfig, ThresholdConfig
from aestream.detect.scoring import ScoreBatch, Scorer, reduce_errors
from aestream.detect.stacked import ModelBank, channel_errors_of
from aestream.detect.thresholds import calibrate_threshold
from aestream.models.bundle import scorer_from_dict, scorer_to_dict
from aestream.stream.windows import Window

__all__ = [
    "Baseline", "Finetune", "SensorBaselines", "fit_baseline", "fit_baselines", "sliding_windows",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Baseline:
    """One sensor's operating point: input scaling, error scaling and threshold under ``model_version``."""

    mean: np.ndarray
    std: np.ndarray
    channel_scale: np.ndarray
    threshold: float
    model_version: str
    n_readings: int
    scorer: Scorer | None = None  # the sensor's own fine-tuned model (baselines.mode = "finetune"), with its scales

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Baseline) and self.to_json() == other.to_json()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (with the sensor's own model, weights and all, when it has one)."""
        d = {"mean": self.mean.tolist(), "std": self.std.tolist(), "channel_scale": self.channel_scale.tolist(),
             "threshold": self.threshold, "model_version": self.model_version, "n_readings": self.n_readings}
        return {**d, "model": scorer_to_dict(self.scorer)} if self.scorer is not None else d

    @classmethod
    def from_dict(cls, d: dict[str, Any], device: str = "cpu") -> Baseline:
        own = scorer_from_dict(d["model"], device) if d.get("model") else None
        return cls(np.array(d["mean"], dtype=np.float64), np.array(d["std"], dtype=np.float64),
                   np.array(d["channel_scale"], dtype=np.float64), float(d["threshold"]), str(d["model_version"]),
                   int(d["n_readings"]), own)

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, device: str = "cpu") -> Baseline:
        return cls.from_dict(json.loads(data), device)


def sliding_windows(rows: np.ndarray, window_size: int, stride: int = 1) -> np.ndarray:
    """Every ``stride``-th window of ``window_size`` consecutive rows of ``(T, C)``, as ``(N, W, C)``.

    >>> sliding_windows(np.arange(5.0)[:, None], 3, 2)[:, :, 0].tolist()
    [[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]]
    """
    w = np.lib.stride_tricks.sliding_window_view(np.asarray(rows), window_size, axis=0)
    return np.ascontiguousarray(w.transpose(0, 2, 1)[::stride])


def fit_baseline(runs: list[np.ndarray], scorer: Scorer, threshold: ThresholdConfig, *, window_size: int,
                 stride: int, model_version: str, min_std_fraction: float) -> tuple[Baseline, np.ndarray]:
    """A sensor's baseline from its calibration readings (contiguous ``runs`` of ``(T, C)``) and the scores of its
    calibration windows under it."""
    result = fit_baselines([runs], scorer, threshold, window_size=window_size, stride=stride,
                           model_version=model_version, min_std_fraction=min_std_fraction)[0]
    if isinstance(result, Exception):
        raise result
    return result


def fit_baselines(all_runs: list[list[np.ndarray]], scorer: Scorer, threshold: ThresholdConfig, *, window_size: int,
                  stride: int, model_version: str,
                  min_std_fraction: float) -> list[tuple[Baseline, np.ndarray] | Exception]:
    """:func:`fit_baseline` of each sensor's ``runs``, all their windows through the model in one call; a sensor
    whose readings make none gets its ``ArithmeticError`` or ``ValueError`` instead."""
    pre = scorer.preprocessor
    out: list[tuple[Baseline, np.ndarray] | Exception] = []
    parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, int]] = []  # index, mean, std, windows, rows
    for runs in all_runs:
        try:
            rows = np.concatenate(runs)
            std = np.maximum(rows.std(axis=0), min_std_fraction * pre.std)
            windows = np.concatenate([sliding_windows(r, window_size, stride) for r in runs if len(r) >= window_size])
            parts.append((len(out), rows.mean(axis=0), std, windows, len(rows)))
            out.append(ValueError("not fitted"))
        except (ArithmeticError, ValueError) as e:
            out.append(e)
    if not parts:
        return out
    counts = [len(p[3]) for p in parts]
    mean = np.repeat(np.stack([p[1] for p in parts]), counts, axis=0)
    std = np.repeat(np.stack([p[2] for p in parts]), counts, axis=0)
    errors = scorer.raw_channel_errors(np.concatenate([p[3] for p in parts]), mean, std)
    for (i, m, s, _, n), own in zip(parts, np.split(errors, np.cumsum(counts)[:-1])):
        try:
            channel_scale, scores, thr = _error_scaling(own, scorer.score_reduce, threshold)
            out[i] = (Baseline(m, s, channel_scale, thr, model_version, n), scores)
        except (ArithmeticError, ValueError) as err:
            out[i] = err
    return out


def _error_scaling(errors: np.ndarray, reduce: str, threshold: ThresholdConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """From channel errors ``(N, C)`` of a sensor's normal windows: its error scale per channel, the windows'
    scores under it, and the threshold calibrated on those."""
    scale = np.maximum(errors.mean(axis=0), 1e-12)
    scores = reduce_errors(errors / scale, reduce)
    return scale, scores, calibrate_threshold(scores, threshold)


Finetune = Callable[[list[np.ndarray], Scorer, str], tuple[Baseline, np.ndarray]]
"""Fine-tunes the shared scorer on a sensor's calibration runs: its baseline with its own model, and the scores
of its validation windows."""


class Background(Protocol):
    """Fine-tunes in slices of the worker's thread (:class:`aestream.training.finetune.Finetuner`)."""

    @property
    def n_pending(self) -> int: ...
    def submit(self, sensor: str, runs: list[np.ndarray], shared: Scorer, model_version: str) -> bool: ...
    def run(self, budget_s: float) -> None: ...
    def done(self) -> list[tuple[str, tuple[Baseline, np.ndarray]]]: ...
    def forget(self, sensors: list[str]) -> None: ...
    def close(self) -> None: ...


def _check_finite(b: Baseline) -> None:
    """Raise :class:`FloatingPointError` when a scale, an error scale or the threshold is NaN or infinite."""
    if not (np.isfinite(b.mean).all() and np.isfinite(b.std).all() and np.isfinite(b.channel_scale).all()
            and np.isfinite(b.threshold)):
        raise FloatingPointError("a scale or the threshold is not finite")


@dataclass
class _Split:
    keep: list[int] = field(default_factory=list)
    started: list[tuple[str, int, int]] = field(default_factory=list)  # sensor, end of its first window, its index
    finished: list[tuple[str, int, Baseline, np.ndarray]] = field(default_factory=list)  # sensor, end of its last


@dataclass
class _Calibration:
    """A sensor's readings taken from its windows, for its baseline or its fine-tune."""

    runs: list[list[np.ndarray]] = field(default_factory=list)
    n_rows: int = 0
    last_end_ms: int = -1

    def count(self, i: int, start_ms: int, end_ms: int, size: int, n_new: int) -> int | None:
        """Count in the new rows of window ``i``; where :meth:`SensorBaselines._take_rows` finds them (``-1-i``:
        all of it, a new run; ``i``: its last ``n_new``), or ``None`` when it brings none.

        A window's new rows are all of them when it follows a gap (or is the first), else its last ``n_new``, the
        readings since the sensor's window before (:attr:`~aestream.stream.windows.Window.n_new`; 0, not known:
        none, as they cannot be told apart)."""
        if self.last_end_ms < 0 or start_ms > self.last_end_ms:
            self.n_rows += size
            at = -1 - i
        elif n_new:
            self.n_rows += n_new
            at = i
        else:
            return None
        self.last_end_ms = end_ms
        return at


class _WindowColumns(Protocol):
    """A step's closed windows column by column (the worker's): what :meth:`SensorBaselines.split` reads."""

    sensors: list[str]
    start_ms: list[int]
    end_ms: list[int]
    n_new: list[int]

    def values(self) -> np.ndarray: ...


class _WindowList:
    """A list of windows as :class:`_WindowColumns`."""

    def __init__(self, windows: Sequence[Window]) -> None:
        self.sensors = [w.sensor for w in windows]
        self.start_ms = [w.start_ms for w in windows]
        self.end_ms = [w.end_ms for w in windows]
        self.n_new = [w.n_new for w in windows]
        self._values = np.stack([w.values for w in windows]) if windows else np.empty((0, 0, 0))

    def values(self) -> np.ndarray:
        return self._values


class SensorBaselines:
    """The baselines of the sensors one worker owns, and the calibrations under way.

    :meth:`split` takes a step's closed windows and keeps those of calibrating sensors; :meth:`score` scores the
    rest, each by its sensor's baseline. ``n_channels`` (``len(stream.channels)``; ``None``: not checked) is what
    :meth:`restore` holds a baseline's channels to."""

    def __init__(self, cfg: BaselinesConfig, threshold: ThresholdConfig, window_size: int, stride: int,
                 stride_ms: int = 0, *, finetune: Finetune | None = None, finetuner: Background | None = None,
                 n_channels: int | None = None, regime_change_after_s: float | None = None) -> None:
        """``regime_change_after_s`` (the worker's: ``retrain.regime_change_after_s``) says that the caller reports
        each step's alarms (:meth:`gather`), which keep a fault's readings out of a fine-tune; ``None`` (the
        default, for a caller that reports none): :meth:`split` gathers the readings of every window."""
        self.cfg, self.threshold = cfg, threshold
        self.finetune, self.finetuner = finetune, finetuner
        self.window_size, self.stride, self.stride_ms = window_size, stride, stride_ms
        self.n_channels = n_channels
        self.regime_ms = None if regime_change_after_s is None else int(regime_change_after_s * 1000)
        self.ready: dict[str, Baseline] = {}
        self._calibrating: dict[str, _Calibration] = {}
        # the readings of sensors to fine-tune again: restored without their own model, or renewed after a swap
        self._gathering: dict[str, _Calibration] = {}
        self._stale_alarm_since: dict[str, int] = {}  # a sensor judged by an earlier model, in alarm: since when
        self._alarm_since: dict[str, int] = {}  # a gathering sensor in alarm: the end of its run's first alarm window
        self._serving: str | None = None  # the shared model's version, as :meth:`renew` was last told
        self._refresh: dict[str, tuple[str, list[np.ndarray]]] = {}  # model version, errors of windows under it
        # models served before, by version, and the sensors whose shared baseline is of one of them: each is judged
        # by the model of its baseline's version until refitted under the serving one (refresh)
        self._earlier: dict[str, Scorer] = {}
        self._by_earlier: dict[str, str] = {}  # sensor → the earlier version of its baseline
        self._n_by_earlier: Counter[str] = Counter()  # version → how many of those sensors: its model goes at 0
        self._banks: dict[Hashable, ModelBank] = {}  # the own models stacked (channel_errors_of)

    @property
    def n_calibrating(self) -> int:
        return len(self._calibrating)

    @property
    def background_waiting(self) -> bool:
        """Whether fine-tunes wait for :meth:`work`."""
        return self.finetuner is not None and self.finetuner.n_pending > 0

    @property
    def _in_background(self) -> bool:
        """Whether fine-tunes run in the background (:class:`Background`), not inside the step."""
        return self.finetune is None and self.finetuner is not None

    def work(self, budget_s: float) -> None:
        """Give the waiting fine-tunes about ``budget_s`` of this thread (their results: :meth:`finetuned`)."""
        if self.finetuner is not None:
            self.finetuner.run(budget_s)

    def split(self, windows: _WindowColumns | Sequence[Window], scorer: Scorer, model_version: str) -> _Split:
        """Which of ``windows`` to score now (those of sensors with a baseline), in order; the others' rows go into
        their sensors' calibration, which finishes with ``scorer`` as soon as it holds ``n_readings`` readings (a
        sensor's later windows of the same step are then scored). The calibrations due in one step finish
        together (:meth:`calibrate_many`): a sensor's later windows wait for its own and then go on as they would
        have, scored, or into a new calibration when its readings made no baseline. A sensor gathering readings for
        a fine-tune (:meth:`restore`, :meth:`renew`) is ready: its windows are kept, and their rows gathered here
        when the caller reports no alarms (else by :meth:`gather`)."""
        cols: _WindowColumns = _WindowList(windows) if isinstance(windows, Sequence) else windows
        sensors, starts, ends = cols.sensors, cols.start_ms, cols.end_ms
        out = _Split()
        ready = self.ready
        distinct = set(sensors)
        if self._gathering and self.regime_ms is None and not self._gathering.keys().isdisjoint(distinct):
            self._gather(cols, scorer, model_version, None)
        waiting = {s for s in distinct if s not in ready}
        if not waiting:  # no calibration in this step
            out.keep = list(range(len(sensors)))
            return out
        # the windows of sensors already ready are kept as they are; only the others are walked one by one
        todo = [i for i, s in enumerate(sensors) if s in waiting]
        if len(todo) < len(sensors):
            out.keep = [i for i, s in enumerate(sensors) if s not in waiting]
        size, news = self.window_size, self._news(cols)
        while todo:
            held: dict[str, list[int]] = {}  # sensors whose calibration is due → their later windows
            due: list[int] = []  # the window completing each due calibration
            taken: dict[str, list[int]] = {}  # a sensor's windows whose new rows its calibration takes (-1-i: all)
            for i in todo:
                sensor = sensors[i]
                if sensor in held:
                    held[sensor].append(i)
                    continue
                if sensor in ready:
                    out.keep.append(i)
                    continue
                cal = self._calibrating.get(sensor)
                if cal is None:
                    cal = self._calibrating[sensor] = _Calibration()
                    out.started.append((sensor, ends[i], i))
                at = cal.count(i, starts[i], ends[i], size, news[i])
                if at is None:
                    continue
                taken.setdefault(sensor, []).append(at)
                if cal.n_rows >= self.cfg.n_readings:
                    held[sensor] = []
                    due.append(i)
            for sensor, idx in taken.items():
                self._take_rows(self._calibrating[sensor], cols.values(), idx, news)
            done = self.calibrate_many([sensors[i] for i in due], scorer, model_version)
            for i, result in zip(due, done):
                if result is not None:
                    out.finished.append((sensors[i], ends[i], *result))
            todo = []
            for i in due:  # a sensor's later windows: kept now it is ready, else into its next calibration
                later = held[sensors[i]]
                (out.keep if sensors[i] in ready else todo).extend(later)
            todo.sort()
        out.keep.sort()
        return out

    def gather(self, windows: _WindowColumns | Sequence[Window], alarms: np.ndarray, scorer: Scorer,
               model_version: str) -> None:
        """Gather the readings of the step's scored ``windows`` (those :meth:`split` kept, in order) of sensors
        gathering for a fine-tune, now that which of them alarmed (``alarms``, the alarm rule's verdicts) is known;
        a sensor that holds ``n_readings`` is submitted, with the shared ``scorer``. Called after each step's
        scoring when this was built with ``regime_change_after_s``; nothing to do (a truthiness check) while no
        sensor gathers.

        A fault is not learned as normal: an alarm window drops what its sensor gathered, and the sensor gathers
        again from its next window, unless it has been alarming for ``regime_change_after_s`` of event time (from
        the end of the first alarm window of its run, which a normal window ends): a regime change, as the
        retraining stage takes it (:mod:`aestream.retrain.stage`), whose windows are gathered. A run counts from the
        first alarm seen while the sensor gathers."""
        if not self._gathering or self.regime_ms is None:
            return
        cols: _WindowColumns = _WindowList(windows) if isinstance(windows, Sequence) else windows
        self._gather(cols, scorer, model_version, alarms)

    def _gather(self, cols: _WindowColumns, scorer: Scorer, model_version: str, alarms: np.ndarray | None) -> None:
        """Take the new rows of the windows of sensors gathering readings for a fine-tune, as a calibration takes
        them, but for the alarm windows :meth:`gather` drops (``alarms``: ``None``, none known); a sensor that
        holds ``n_readings`` is submitted (:meth:`_submit_gathered`) at once, so a refused one gathers again from
        its very next window."""
        gathering, sensors, starts, ends = self._gathering, cols.sensors, cols.start_ms, cols.end_ms
        size, news = self.window_size, self._news(cols)
        since, regime_ms = self._alarm_since, self.regime_ms or 0
        taken: dict[str, list[int]] = {}
        for i in [i for i, s in enumerate(sensors) if s in gathering]:
            sensor = sensors[i]
            cal = gathering.get(sensor)
            if cal is None:  # submitted earlier in this step
                continue
            if alarms is not None:
                if not alarms[i]:
                    since.pop(sensor, None)
                elif ends[i] - since.setdefault(sensor, ends[i]) < regime_ms:  # a fault, as far as is known yet
                    if cal.n_rows:  # (debug: a sensor alarming on and off would log at every alarm)
                        log.debug("sensor %s alarms: the %d readings it gathered for its fine-tune are dropped, it "
                                  "gathers again from its next normal window", sensor, cal.n_rows)
                        gathering[sensor] = _Calibration()
                        taken.pop(sensor, None)
                    continue
                elif not cal.n_rows:
                    log.info("sensor %s has been alarming for %.0f s (retrain.regime_change_after_s = %.0f): taken "
                             "for a regime change, its readings are gathered for its fine-tune", sensor,
                             (ends[i] - since[sensor]) / 1000, regime_ms / 1000)
            at = cal.count(i, starts[i], ends[i], size, news[i])
            if at is None:
                continue
            taken.setdefault(sensor, []).append(at)
            if cal.n_rows >= self.cfg.n_readings:
                self._take_rows(cal, cols.values(), taken.pop(sensor), news)
                self._submit_gathered(sensor, cal, scorer, model_version)
        for sensor, idx in taken.items():
            self._take_rows(gathering[sensor], cols.values(), idx, news)

    def _submit_gathered(self, sensor: str, cal: _Calibration, scorer: Scorer, model_version: str) -> None:
        """Queue the fine-tune of ``sensor`` on the readings it gathered. A full queue refuses it: rather than stay
        on the model that judges it for good (a worker taking over a fleet restores more sensors than the queue
        holds), it gathers its next ``n_readings`` and tries again."""
        assert self.finetuner is not None
        judge = "its own model" if self.ready[sensor].scorer is not None else "the shared model"
        if self.finetuner.submit(sensor, [np.concatenate(r) for r in cal.runs], scorer, model_version):
            self._stop_gathering(sensor)
            log.info("sensor %s: its own model fine-tunes again, from model %s, on the %d readings it gathered",
                     sensor, model_version, cal.n_rows)
            return
        self._gathering[sensor] = _Calibration()
        log.info("sensor %s: its fine-tune was not queued; it gathers its next %d readings to try again, judged by "
                 "%s meanwhile", sensor, self.cfg.n_readings, judge)

    def _stop_gathering(self, sensor: str) -> None:
        self._gathering.pop(sensor, None)
        self._alarm_since.pop(sensor, None)

    def _renews(self, b: Baseline) -> bool:
        """Whether ``b``, a sensor's own model, is to be fine-tuned again from the serving model (:meth:`renew`)."""
        return (b.scorer is not None and self._serving is not None and b.model_version != self._serving
                and self._in_background)

    def renew(self, model_version: str, previous: tuple[str, Scorer] | None = None) -> None:
        """The worker serves shared model ``model_version`` (told at every swap; ``previous``: the version and scorer
        it served until now). Each ready sensor without its own model whose baseline is of ``previous``'s version
        is judged by that model and its baseline until its baseline is refitted under ``model_version``
        (:meth:`refresh`, from the windows it judges normal): its scales and threshold are that model's (a
        baseline of an earlier version restored meanwhile, likewise). Each ready sensor whose own model
        was made under another version gathers its next ``n_readings`` readings (:meth:`gather`; :meth:`split`
        without ``regime_change_after_s``), judged by that own model meanwhile, and is then fine-tuned from the
        serving model in the background; the result, of ``model_version``, becomes its baseline
        (:meth:`finetuned`). So a retrain reaches the sensors with their own model. A sensor that already
        gathers goes on. Left as they are: sensors whose own model is of ``model_version``, sensors without their
        own model (their baseline is refitted under the new model, :meth:`refresh`), and every sensor when
        fine-tunes are not in the background (``baselines.finetune_blocking``, or ``mode = "shared"``). Later
        own models of another version (a fine-tune submitted before the swap, a baseline restored from the
        changelog) are fine-tuned again the same way."""
        self._serving = model_version
        if model_version in self._earlier:  # a rollback to it: its baselines are current again
            for s in [s for s, v in self._by_earlier.items() if v == model_version]:
                self._not_by_earlier(s)
        if previous is not None:
            self.judge_by_earlier(*previous)
        renewing = [s for s, b in self.ready.items() if self._renews(b) and s not in self._gathering]
        for s in renewing:
            self._gathering[s] = _Calibration()
        if renewing:
            log.info("%d sensor(s) with their own model of another version gather their next %d readings to be "
                     "fine-tuned from model %s, judged by their own model meanwhile", len(renewing),
                     self.cfg.n_readings, model_version)

    def _news(self, cols: _WindowColumns) -> list[int]:
        """Each window's readings since its sensor's window before; where not known (windows made by hand), a
        count stride's."""
        fallback = 0 if self.stride_ms else self.stride
        return [n or fallback for n in cols.n_new] if fallback and 0 in cols.n_new else cols.n_new

    def _take_rows(self, cal: _Calibration, values: np.ndarray, idx: list[int], news: list[int]) -> None:
        """Copy the new rows of windows ``idx`` of ``values`` (``-1-i``: all of window ``i``, a new run; ``i``:
        its last ``news[i]``) into ``cal``, a run's tails in one call where they bring as many each."""
        start = 0
        while start < len(idx):
            stop = start + 1
            while stop < len(idx) and idx[stop] >= 0:
                stop += 1
            head = idx[start]
            if head < 0:
                cal.runs.append([np.array(values[-1 - head], dtype=np.float64)])
                start += 1
            tails = idx[start:stop]
            if tails:
                k = {news[t] for t in tails}
                if len(k) == 1:
                    rows = values[tails, -k.pop():]
                    cal.runs[-1].append(rows.reshape(-1, rows.shape[-1]).astype(np.float64))
                else:
                    cal.runs[-1].append(np.concatenate([values[t, -news[t]:] for t in tails]).astype(np.float64))
            start = stop

    def calibrate(self, sensor: str, scorer: Scorer, model_version: str) -> tuple[Baseline, np.ndarray] | None:
        """Finish ``sensor``'s calibration with the serving model: its baseline and calibration scores; ``None``
        (and the sensor calibrates again from its next readings) when its readings make no usable baseline —
        values so extreme that a scale, an error or the threshold is not finite."""
        return self.calibrate_many([sensor], scorer, model_version)[0]

    def calibrate_many(self, sensors: list[str], scorer: Scorer,
                       model_version: str) -> list[tuple[Baseline, np.ndarray] | None]:
        """:meth:`calibrate` of each of ``sensors``, their calibration windows through the model in one call."""
        cals = [self._calibrating.pop(s) for s in sensors]
        all_runs = [[np.concatenate(r) for r in cal.runs] for cal in cals]
        if self.finetune is not None:  # the sensors' own models now, in this step
            fit: list[tuple[Baseline, np.ndarray] | Exception] = []
            for runs in all_runs:
                try:
                    fit.append(self.finetune(runs, scorer, model_version))
                except (ArithmeticError, ValueError) as e:  # FloatingPointError: a diverged fine-tune
                    fit.append(e)
        else:
            fit = fit_baselines(all_runs, scorer, self.threshold, window_size=self.window_size,
                                stride=1 if self.stride_ms else self.stride, model_version=model_version,
                                min_std_fraction=self.cfg.min_std_fraction)
        out: list[tuple[Baseline, np.ndarray] | None] = []
        for sensor, cal, runs, result in zip(sensors, cals, all_runs, fit):
            try:
                if isinstance(result, Exception):
                    raise result
                _check_finite(result[0])
            except (ArithmeticError, ValueError) as e:
                log.warning("sensor %s: no baseline from its %d calibration readings (%s: %s); it calibrates again",
                            sensor, cal.n_rows, type(e).__name__, e)
                out.append(None)
                continue
            if self.finetune is None and self.finetuner is not None:  # its own model later: the shared one meanwhile
                self.finetuner.submit(sensor, runs, scorer, model_version)
            self.ready[sensor] = result[0]
            self._not_by_earlier(sensor)
            out.append(result)
        return out

    def finetuned(self) -> list[tuple[str, Baseline, np.ndarray]]:
        """The background fine-tunes finished since the last call, now the baselines of their sensors."""
        if self.finetuner is None:
            return []
        out = []
        for sensor, (baseline, scores) in self.finetuner.done():
            try:
                _check_finite(baseline)
            except FloatingPointError as e:
                log.warning("sensor %s: its fine-tuned model is unusable (%s); the shared model judges it", sensor, e)
                continue
            if sensor in self.ready:  # not forgotten meanwhile
                self.ready[sensor] = baseline
                self._not_by_earlier(sensor)
                if self._renews(baseline):  # made from a model swapped out since: better than none meanwhile
                    self._gathering.setdefault(sensor, _Calibration())
                    log.info("sensor %s: its own model is of %s, the shared model is %s now: it gathers its next "
                             "%d readings to be fine-tuned again", sensor, baseline.model_version, self._serving,
                             self.cfg.n_readings)
                else:
                    self._stop_gathering(sensor)
                out.append((sensor, baseline, scores))
        return out

    def score(self, windows: np.ndarray, sensors: list[str], scorer: Scorer) -> tuple[ScoreBatch, np.ndarray]:
        """Scores of ``windows`` ``(B, W, C)`` of ready ``sensors`` by their baselines, and the raw channel errors
        (for :meth:`refresh`)."""
        slot = {s: i for i, s in enumerate(dict.fromkeys(sensors))}  # each sensor's row among the step's distinct
        at = np.fromiter(map(slot.__getitem__, sensors), np.intp, len(sensors))  # sensors (no Python frame a window)
        base = [self.ready[s] for s in slot]
        own_scorers = [b.scorer for b in base if b.scorer is not None]
        scale = np.array([b.channel_scale for b in base])[at]  # np.array: np.stack costs 3× as much on 25 rows
        if len(own_scorers) == len(base):  # every sensor by its own model (in service): the models stacked
            errors = channel_errors_of(own_scorers, at, windows, self._banks, self._own_scorers)
            return ScoreBatch.of(errors / scale, scorer.score_reduce), errors
        own = np.array([b.scorer is not None for b in base])
        errors = np.empty((len(sensors), windows.shape[2]))
        judged = errors  # the errors each window is judged by: other than ``errors`` for an earlier model's sensors
        shared = np.flatnonzero(~own[at]) if own_scorers else None  # None: every window
        if shared is None or len(shared):
            mean, std = np.array([b.mean for b in base])[at], np.array([b.std for b in base])[at]
            if shared is None:
                errors[:] = scorer.raw_channel_errors(windows, mean, std)
            else:
                errors[shared] = scorer.raw_channel_errors(windows[shared], mean[shared], std[shared])
            if self._by_earlier:
                judged = self._judged_by_earlier(windows, errors, slot, base, at, mean, std)
        if own_scorers:  # the other sensors' windows through their own models, stacked
            local = np.cumsum(own) - 1  # a sensor's place among those with their own model
            rows = np.flatnonzero(own[at])  # the windows they judge
            errors[rows] = channel_errors_of(own_scorers, local[at[rows]], windows[rows], self._banks,
                                             self._own_scorers)
            if judged is not errors:
                judged[rows] = errors[rows]
        return ScoreBatch.of(judged / scale, scorer.score_reduce), errors

    def _judged_by_earlier(self, windows: np.ndarray, errors: np.ndarray, slot: dict[str, int],
                           base: list[Baseline], at: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        """``errors`` with the rows of sensors whose shared baseline is of an earlier model (:meth:`renew`) taken
        again through that model; ``errors`` itself when there are none in this step."""
        by = self._by_earlier
        versions = np.array([by.get(s, "") if b.scorer is None else "" for s, b in zip(slot, base)], dtype=object)[at]
        judged = errors
        for version, earlier in self._earlier.items():
            rows = np.flatnonzero(versions == version)
            if len(rows):
                if judged is errors:
                    judged = errors.copy()
                judged[rows] = earlier.raw_channel_errors(windows[rows], mean[rows], std[rows])
        return judged

    def _own_scorers(self) -> list[Scorer]:
        """Every ready sensor's own model: a walk over the fleet, for a model bank that must grow."""
        return [b.scorer for b in self.ready.values() if b.scorer is not None]

    def refresh(self, sensors: list[str], errors: np.ndarray, alarms: np.ndarray, scorer: Scorer,
                model_version: str, end_ms: Sequence[int] | None = None) -> list[tuple[str, Baseline]]:
        """Gather the errors of normal windows whose sensor's baseline is of another model version (``alarms``: as
        :meth:`score` judged them, by an earlier model for its sensors); refit the error scaling and threshold of
        each sensor with ``n_refresh_windows`` of them. A sensor's errors are of one model version: those gathered
        under another (swapped again meanwhile) are dropped, so a refit labelled with a version is fitted on its
        errors alone. Returns the refitted baselines."""
        done: list[tuple[str, Baseline]] = []
        stale = {s for s in set(sensors)
                 if (b := self.ready.get(s)) is not None and b.scorer is None and b.model_version != model_version}
        for i, s in enumerate(sensors) if stale else ():
            if s not in stale:
                continue
            b = self.ready.get(s)
            if b is None or b.scorer is not None or b.model_version == model_version:
                continue
            if end_ms is not None and self.regime_ms is not None:  # a regime change: no window will ever refit it
                if not alarms[i]:
                    self._stale_alarm_since.pop(s, None)
                elif end_ms[i] - self._stale_alarm_since.setdefault(s, end_ms[i]) >= self.regime_ms:
                    log.info("sensor %s has been alarming for %.0f s under its baseline of %s "
                             "(retrain.regime_change_after_s): taken for a regime change, it calibrates again under "
                             "model %s", s, (end_ms[i] - self._stale_alarm_since[s]) / 1000, b.model_version,
                             model_version)
                    self._stale_alarm_since.pop(s, None)
                    self.forget([s])
                    continue
            if alarms[i]:
                continue
            if not np.isfinite(errors[i]).all():  # a reading so far out its error overflows: no normal window
                continue
            held = self._refresh.get(s)
            if held is None or held[0] != model_version:
                held = self._refresh[s] = (model_version, [])
            buf = held[1]
            buf.append(errors[i])
            if len(buf) >= self.cfg.n_refresh_windows:
                del self._refresh[s]
                scale, _, thr = _error_scaling(np.stack(buf), scorer.score_reduce, self.threshold)
                refit = Baseline(b.mean, b.std, scale, thr, model_version, b.n_readings)
                try:
                    _check_finite(refit)
                except FloatingPointError as e:
                    log.warning("sensor %s: no refit under model %s (%s); it gathers again", s, model_version, e)
                    continue
                self.ready[s] = refit
                done.append((s, refit))
                self._not_by_earlier(s)
        return done

    def earlier_versions(self) -> set[str]:
        """The model versions of shared baselines that are neither the serving one nor judged by theirs (restored
        from the changelog after this worker's start, say): :meth:`judge_by_earlier` takes their models."""
        return {b.model_version for s, b in self.ready.items()
                if b.scorer is None and b.model_version != self._serving and s not in self._by_earlier}

    def judge_by_earlier(self, version: str, scorer: Scorer) -> int:
        """Judge the ready sensors whose shared baseline is of ``version`` (not the serving one) by ``scorer``, that
        version's model, until they refit (:meth:`refresh`); returns how many."""
        if version == self._serving:
            return 0
        old = [s for s, b in self.ready.items() if b.scorer is None and b.model_version == version]
        if old:
            self._earlier[version] = scorer
            for s in old:
                self._not_by_earlier(s, self.ready[s])
        return len(old)

    def _not_by_earlier(self, sensor: str, baseline: Baseline | None = None) -> None:
        """``sensor`` has ``baseline`` now (``None``: none, or one of the serving model): judged by an earlier model
        when it is a shared one of such a model's version, else not; each earlier model is let go after its last
        sensor."""
        was = self._by_earlier.pop(sensor, None)
        if was is not None:
            self._n_by_earlier[was] -= 1
            if not self._n_by_earlier[was]:
                del self._n_by_earlier[was], self._earlier[was]
        if baseline is not None and baseline.scorer is None and baseline.model_version in self._earlier:
            self._by_earlier[sensor] = baseline.model_version
            self._n_by_earlier[baseline.model_version] += 1

    def restore(self, baselines: dict[str, Baseline]) -> dict[str, Baseline]:
        """Take baselines made elsewhere (a changelog); calibrations of those sensors under way are dropped. One that
        does not fit this worker's windows is not taken (a warning): its sensor calibrates again. A sensor without
        its own model while fine-tunes run in the background lost its fine-tune with its old owner, and one whose
        own model is of another version than the serving one (:meth:`renew`) missed a retrain: each gathers
        readings for a new one (:meth:`split`, :meth:`gather`). Returns the baselines taken."""
        taken: dict[str, Baseline] = {}
        for s, b in baselines.items():
            misfit = self._misfit(b)
            if misfit is not None:
                log.warning("sensor %s: its restored baseline does not fit this worker (%s); it is dropped and the "
                            "sensor calibrates again", s, misfit)
                continue
            self.ready[s] = taken[s] = b
            self._not_by_earlier(s, b)
            self._calibrating.pop(s, None)
            self._stop_gathering(s)
            if self._in_background and (b.scorer is None or self._renews(b)):
                self._gathering[s] = _Calibration()
        return taken

    def _misfit(self, b: Baseline) -> str | None:
        """What of ``b`` differs from this worker's windows (it was made under another ``stream.channels`` or
        ``stream.window_size``, and its scales or model cannot take them), or ``None``."""
        n = self.n_channels
        if n is not None:
            wrong = next((len(a) for a in (b.mean, b.std, b.channel_scale) if len(a) != n), None)
            if wrong is not None:
                return f"it has {wrong} channels, stream.channels has {n}"
        if b.scorer is None:
            return None
        if self.finetune is None and self.finetuner is None:  # its scales and threshold are its own model's
            return "it has a fine-tuned model of its own, and baselines.mode = \"shared\" judges by the shared one"
        model = b.scorer.model
        if model.window_size != self.window_size:
            return f"its own model's window_size is {model.window_size}, stream.window_size is {self.window_size}"
        if n is not None and model.n_channels != n:
            return f"its own model has {model.n_channels} channels, stream.channels has {n}"
        return None

    def close(self) -> None:
        if self.finetuner is not None:
            self.finetuner.close()

    def rest(self, sensors: Iterable[str]) -> None:
        """Sensors idle past ``stream.sensor_ttl_s`` (the worker forgot their windows): drop the readings they were
        gathering (a calibration under way, which starts again when the sensor comes back; a fine-tune's, which
        gathers again from its next reading) and the errors of a refit. Their baselines stay: a sensor that comes
        back is judged at once."""
        for s in sensors:
            self._calibrating.pop(s, None)
            if s in self._gathering:
                self._gathering[s] = _Calibration()
            self._refresh.pop(s, None)

    def forget(self, sensors: Iterable[str]) -> None:
        sensors = list(sensors)
        if self.finetuner is not None:
            self.finetuner.forget(sensors)
        for s in sensors:
            self.ready.pop(s, None)
            self._calibrating.pop(s, None)
            self._stop_gathering(s)
            self._refresh.pop(s, None)
            self._stale_alarm_since.pop(s, None)
            self._not_by_earlier(s)
        self._banks.clear()  # they hold the forgotten sensors' models: built again from those left
