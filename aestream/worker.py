"""The worker: owns the loop between the Kafka edge and the domain (:mod:`aestream.app` builds it).

One step of the loop::

    poll records → decode (bad → dead letter) → windows per sensor → score the batch → alarm rule
    → anomaly events → producer flush → commit offsets

Offsets are committed only after the producer has acknowledged every event and dead letter of those offsets
(at-least-once); event ids are deterministic, so a replay after a crash repeats the same ids. With a count stride
each commit carries, per partition, its sensors' window phase (:mod:`aestream.stream.phase`); a worker given the
partition restores it after the lookback replay, before the first live record, so the windows close on the same
readings as before (replayed offsets are below the committed ones and are not committed again). A new model is
swapped in only between steps. ``stop()`` (wired to SIGTERM/SIGINT by the CLI) ends the loop after the step in
flight, which flushes and commits before the worker closes.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aestream.config import Config
from aestream.detect.thresholds import AlarmRule
from aestream.errors import BundleError, InvalidReading
from aestream.kafka.protocols import ModelSource, Sink, Source
from aestream.models.bundle import ModelBundle
from aestream.stream.codec import Block, Columns, ReadingDecoder
from aestream.stream.events import anomaly_event, encode_event
from aestream.stream.messages import Outgoing, Partition, Record
from aestream.stream.phase import PhaseCheckpoint
from aestream.stream.stages import Scored, Stage
from aestream.stream.windows import LATE, Window, Windower

__all__ = ["StepStats", "Worker", "WorkerObserver", "dead_letter"]

log = logging.getLogger(__name__)


@dataclass
class StepStats:
    """What one step did (the worker also keeps running totals in ``Worker.totals``)."""

    records: int = 0
    readings: int = 0
    windows: int = 0
    events: int = 0
    dead_letters: int = 0
    late: int = 0
    replayed: int = 0
    model_version: str = ""
    events_out: list[dict[str, Any]] = field(default_factory=list)


class WorkerObserver:
    """Watches the worker from its own thread (metrics, say): both hooks are no-ops until overridden."""

    def on_step(self, stats: StepStats, seconds: float) -> None:
        """A step ended after ``seconds``."""

    def on_model(self, bundle: ModelBundle) -> None:
        """``bundle`` is now served."""


def dead_letter(topic: str, rec: Record, reason: str) -> Outgoing:
    """The dead-letter message for ``rec``: its original bytes and key, provenance and reason in headers."""
    headers = [
        ("aestream.reason", reason.encode()),
        ("aestream.source.topic", rec.topic.encode()),
        ("aestream.source.partition", str(rec.partition).encode()),
        ("aestream.source.offset", str(rec.offset).encode()),
        ("aestream.source.timestamp_ms", str(rec.timestamp_ms).encode()),
    ]
    return Outgoing(topic, rec.value if rec.value is not None else b"", rec.key, headers)


class Worker:
    """Consumes readings, scores windows, emits events; see the module docstring for the step order."""

    def __init__(
        self,
        cfg: Config,
        source: Source,
        sink: Sink,
        models: ModelSource,
        *,
        device: str = "cpu",
        clock: Callable[[], float] = time.monotonic,
        model_check_interval_s: float = 1.0,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        stages: Iterable[Stage] = (),
        observers: Iterable[WorkerObserver] = (),
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.sink = sink
        self.models = models
        self.device = device
        self.clock = clock
        self.model_check_interval_s = model_check_interval_s
        self.on_event = on_event
        self.stages = list(stages)
        self.observers = list(observers)
        s = cfg.stream
        self.decoder = ReadingDecoder(s.channels, s.max_message_bytes, s.max_readings_per_message)
        self.windows = Windower(s.window_size, s.stride, len(s.channels), s.max_gap_ms, s.stride_ms)
        self._sensor_partition: dict[str, Partition] = {}
        self._stop = threading.Event()
        self._closing = False
        self._last_model_check = -float("inf")
        self._last_evict = clock()
        self._uncommitted: dict[Partition, int] = {}
        self._last_commit = clock()
        self._retry_at = -float("inf")  # after a failed commit, the next try waits COMMIT_RETRY_S
        # a count stride's phase goes with the commits and is restored after a rebuild
        self.phases = PhaseCheckpoint(self.windows) if s.stride > 1 and not s.stride_ms else None
        self.bundle: ModelBundle | None = None
        self.rule: AlarmRule | None = None
        self.totals = StepStats()

    # -- model ------------------------------------------------------------------------------------------------
    def refresh_model(self, force: bool = False) -> None:
        """Swap in the store's current version if it changed (called between steps only)."""
        now = self.clock()
        if not force and now - self._last_model_check < self.model_check_interval_s:
            return
        self._last_model_check = now
        version = self.models.current()
        if version is None or (self.bundle is not None and version == self.bundle.version):
            return
        try:
            bundle = self.models.load(version, self.device)
            self._check_compatible(bundle)
        except BundleError as e:
            if self.bundle is None:
                raise
            log.error("model %s refused, still serving %s: %s", version, self.bundle.version, e)
            return
        previous = self.bundle.version if self.bundle else None
        self.bundle = bundle
        a = bundle.alarm
        self.rule = AlarmRule(bundle.threshold, k=int(a.get("k", 1)), n=int(a.get("n", 1)),
                              smoothing=int(a.get("smoothing", 1)), sensor_factors=self.cfg.threshold.sensors)
        log.info("serving model %s (%s, threshold %.4g), was %s", version, bundle.family, bundle.threshold, previous)
        for observer in self.observers:
            observer.on_model(bundle)

    def _check_compatible(self, bundle: ModelBundle) -> None:
        s = self.cfg.stream
        if bundle.channels != tuple(s.channels) or bundle.window_size != s.window_size:
            raise BundleError(
                f"model {bundle.version} was trained for channels {list(bundle.channels)} and window_size "
                f"{bundle.window_size}, but stream.channels = {list(s.channels)} and stream.window_size = "
                f"{s.window_size}: retrain it with this config (aestream train)")

    # -- partitions -------------------------------------------------------------------------------------------
    def on_partitions_changed(self, parts: list[Partition]) -> None:
        """Forget the window and alarm state of sensors on partitions that moved (they are rebuilt by replay).
        No commit here: kafka-python cannot commit from inside its rebalance callback; what was processed and not
        yet committed on a partition that moved is read again by its new owner (same event ids)."""
        moved = set(parts)
        for p in moved:  # not ours to commit any more: the new owner reads from the last committed offset
            self._uncommitted.pop(p, None)
        gone = [s for s, p in self._sensor_partition.items() if p in moved]
        if self.phases is not None:
            self.phases.forget(moved)
        self.windows.drop(gone)
        if self.rule is not None:
            self.rule.drop(gone)
        for s in gone:
            del self._sensor_partition[s]
        if self._closing:
            return  # the partitions are given up because we stop: stages keep their state for a restart
        if gone:
            for stage in self.stages:
                stage.forget(gone)

    # -- the loop ---------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to end after the step in flight."""
        self._stop.set()

    def run(self, max_idle_s: float | None = None) -> StepStats:
        """Loop until :meth:`stop` (or ``max_idle_s`` without records); returns the totals."""
        self.refresh_model(force=True)
        # The long-lived heap (modules, config, the model) leaves the cyclic collector's scans: a poll of batched
        # messages allocates ~10⁴ containers, and the full collections they trigger over the whole heap cost more
        # than decoding them (batched messages: ~1.7× the readings/s in-process; close() unfreezes).
        gc.freeze()
        idle_since = self.clock()
        try:
            while not self._stop.is_set():
                stats = self.step()
                if stats.records:
                    idle_since = self.clock()
                elif max_idle_s is not None and self.clock() - idle_since > max_idle_s:
                    break
        finally:
            self.close()
        return self.totals

    def step(self) -> StepStats:
        """One poll → process (events are sent as they are found) → flush and commit, at most every
        ``kafka.commit_interval_ms`` and whenever a poll comes back empty."""
        t0 = time.perf_counter()
        self.refresh_model()
        records = self.source.poll()
        self._take_committed_metadata()
        stats = self.process(records)
        if records:
            self._uncommitted.update(_next_offsets(r for r in records if not r.replay))
        interval_s = self.cfg.kafka.commit_interval_ms / 1000
        now = self.clock()
        if self._uncommitted and (not records or now - self._last_commit >= interval_s) and now >= self._retry_at:
            self.commit()
        self._evict_idle()
        self._add_totals(stats)
        if self.observers:
            seconds = time.perf_counter() - t0
            for observer in self.observers:
                observer.on_step(stats, seconds)
        return stats

    def commit(self) -> None:
        """Flush what was sent, then commit the offsets processed so far (never the other way round)."""
        try:
            self.sink.flush()
        except BaseException:
            self._uncommitted = {}  # their events may be lost: those records must be read again, never committed
            raise
        offsets, self._uncommitted = self._uncommitted, {}
        metadata = self.phases.metadata(self._sensor_partition, offsets) if self.phases and offsets else {}
        done = self.source.commit(offsets, metadata) if metadata else self.source.commit(offsets)
        self._last_commit = self.clock()
        if done is False:  # the broker is away or the group moved on: the offsets go with a later commit
            offsets.update(self._uncommitted)
            self._uncommitted = offsets
            self._retry_at = self._last_commit + COMMIT_RETRY_S
        else:
            self._retry_at = -float("inf")

    def _take_committed_metadata(self) -> None:
        take = getattr(self.source, "committed_metadata", None)
        if self.phases is not None and take is not None:
            self.phases.expect(take())

    def process(self, records: list[Record]) -> StepStats:
        """Decode, window, score and emit for a batch of records (no flush, no commit)."""
        assert self.bundle is not None and self.rule is not None, "refresh_model() first"
        stats = StepStats(records=len(records), model_version=self.bundle.version)
        closed: list[tuple[Window, Record]] = []
        now = self.clock()
        if self.phases is not None and self.phases.pending:  # a replay with committed phases ends in or before this
            replayed = [r for r in records if r.replay]
            records = [r for r in records if not r.replay]
            if replayed:
                self._window(replayed, closed, stats, now)
            self.phases.restore({(r.topic, r.partition) for r in records})
        self._window(records, closed, stats, now)
        scored = self._score(closed, stats) if closed else []
        for stage in self.stages:
            for msg in (stage.on_scored(scored) if scored else []) + stage.on_tick(now):
                self.sink.send(msg)
        return stats

    def _window(self, records: list[Record], closed: list[tuple[Window, Record]], stats: StepStats,
                now: float) -> None:
        """Decode records into the windows (bad ones to the dead-letter topic), adding the windows they close."""
        docs = self.decoder.parse_many([r.value for r in records])
        columns = self.decoder.columns(docs) if len(docs) > 1 else None
        if columns is not None:
            self._push_columns(records, columns, closed, stats, now)
            return
        dlq = self.cfg.kafka.dead_letter_topic
        blocks: list[tuple[Record, Block]] = []  # cut together (Windower.push_blocks), before any later reading

        def push_blocks() -> None:
            for (rec, _), (windows, _, late) in zip(blocks, self.windows.push_blocks([b for _, b in blocks], now)):
                stats.late += late
                closed.extend((w, rec) for w in windows)
            blocks.clear()

        for rec, doc in zip(records, docs):
            stats.replayed += rec.replay
            try:
                readings = self.decoder.from_doc(doc)
            except InvalidReading as e:
                if not rec.replay:
                    self.sink.send(dead_letter(dlq, rec, str(e)))
                    stats.dead_letters += 1
                continue
            part = (rec.topic, rec.partition)
            if isinstance(readings, Block):
                self._sensor_partition[readings.sensor] = part
                stats.readings += len(readings.ts_ms)
                blocks.append((rec, readings))
                continue
            if blocks:
                push_blocks()
            for r in readings:
                stats.readings += 1
                self._sensor_partition[r.sensor] = part
                w = self.windows.push(r.sensor, r.ts_ms, r.values, now)
                if w is LATE:
                    stats.late += 1
                elif w is not None:
                    closed.append((w, rec))  # type: ignore[arg-type]
        if blocks:
            push_blocks()

    def _push_columns(self, records: list[Record], columns: Columns, closed: list[tuple[Window, Record]],
                      stats: StepStats, now: float) -> None:
        """A poll of plain single-reading messages (one reading each, all valid): into the windows a sensor at a
        time, each sensor's readings in arrival order, the long runs vectorised."""
        stats.readings += len(records)
        stats.replayed += sum(r.replay for r in records)
        stamps, values = columns.ts_ms.tolist(), columns.values
        by_sensor: dict[str, list[int]] = {}
        for i, sensor in enumerate(columns.sensors):
            by_sensor.setdefault(sensor, []).append(i)
        for sensor, idx in by_sensor.items():
            first = records[idx[0]]
            self._sensor_partition[sensor] = (first.topic, first.partition)
            if len(idx) < 128:  # a block costs ~20 numpy calls: pushing one by one is cheaper for short runs
                push = self.windows.push
                for i in idx:
                    w = push(sensor, stamps[i], values[i], now)
                    if w is not None:
                        if w is LATE:
                            stats.late += 1
                        else:
                            closed.append((w, records[i]))  # type: ignore[arg-type]
                continue
            windows, at, late = self.windows.push_block_at(sensor, columns.ts_ms[idx], columns.values[idx], now)
            stats.late += late
            closed.extend((w, records[idx[j]]) for w, j in zip(windows, at))

    def _score(self, closed: list[tuple[Window, Record]], stats: StepStats) -> list[Scored]:
        assert self.bundle is not None and self.rule is not None
        b = self.bundle
        batch = b.scorer.score(np.stack([w.values for w, _ in closed]))
        scores, shares = _finite(batch.scores, batch.shares)
        critical = float(b.alarm.get("critical_ratio", self.cfg.threshold.critical_ratio))
        stats.windows += len(closed)
        topic = self.cfg.kafka.output_topic
        scored: list[Scored] = []
        smooth, alarms = self._alarms(closed, scores)
        keep = bool(self.stages)  # the scored windows are only for the stages
        todo = range(len(closed)) if keep else np.flatnonzero(alarms).tolist()
        for i in todo:
            w, rec = closed[i]
            smoothed, alarm = float(smooth[i]), bool(alarms[i])
            if not alarm or rec.replay:
                if keep:
                    scored.append(Scored(w, smoothed, self.rule.threshold_for(w.sensor), alarm, shares[i],
                                         b.version, None, rec.replay))
                continue
            event = anomaly_event(
                sensor=w.sensor, window_start_ms=w.start_ms, window_end_ms=w.end_ms, score=smoothed,
                threshold=self.rule.threshold_for(w.sensor), critical_ratio=critical, channels=b.channels,
                shares=shares[i],
                model_version=b.version, model_family=b.family, source=(rec.topic, rec.partition, rec.offset))
            self.sink.send(Outgoing(topic, encode_event(event), w.sensor.encode()))
            stats.events += 1
            stats.events_out.append(event)
            scored.append(Scored(w, smoothed, event["threshold"], alarm, shares[i], b.version, event, False))
            if self.on_event:
                self.on_event(event)
        return scored

    def _alarms(self, closed: list[tuple[Window, Record]], scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The alarm rule over the batch's windows, each run of one sensor's windows at once."""
        assert self.rule is not None
        sensors = [w.sensor for w, _ in closed]
        smoothed, alarms = np.empty(len(sensors)), np.empty(len(sensors), dtype=bool)
        starts = [0, *(i for i in range(1, len(sensors)) if sensors[i] != sensors[i - 1]), len(sensors)]
        for i, j in zip(starts, starts[1:]):
            if j - i == 1:
                smoothed[i], alarms[i] = self.rule.update(sensors[i], float(scores[i]))
            else:
                smoothed[i:j], alarms[i:j] = self.rule.update_many(sensors[i], scores[i:j])
        return smoothed, alarms

    def _evict_idle(self) -> None:
        now = self.clock()
        ttl = self.cfg.stream.sensor_ttl_s
        if now - self._last_evict < min(ttl, 60.0):
            return
        self._last_evict = now
        gone = self.windows.evict_idle(now, ttl)
        if gone:
            if self.rule is not None:
                self.rule.drop(gone)
            for s in gone:
                self._sensor_partition.pop(s, None)
            log.info("evicted %d idle sensors", len(gone))

    def _add_totals(self, s: StepStats) -> None:
        t = self.totals
        t.records += s.records
        t.readings += s.readings
        t.windows += s.windows
        t.events += s.events
        t.dead_letters += s.dead_letters
        t.late += s.late
        t.replayed += s.replayed
        t.model_version = s.model_version or t.model_version

    def close(self) -> None:
        """Close the stages (sending what they return), flush what is in flight and close both clients."""
        self._closing = True
        gc.unfreeze()  # what was frozen at the first model is collectable again (and at exit)
        try:
            for stage in self.stages:
                for msg in stage.close():
                    self.sink.send(msg)
            self.commit()
        finally:
            self.source.close()
            self.sink.close()


COMMIT_RETRY_S = 1.0
SCORE_CAP = float(np.finfo(np.float32).max)


def _finite(scores: np.ndarray, shares: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A window holding a finite but huge reading (|v| ~ 1e30) scores inf or NaN; it is reported as the most
    anomalous window there is (``SCORE_CAP``) rather than crashing the event encoder on every replay.

    >>> s, sh = _finite(np.array([1.0, np.inf, np.nan]), np.array([[1.0, 0.0], [np.nan, np.nan], [1.0, 0.0]]))
    >>> s.tolist() == [1.0, SCORE_CAP, SCORE_CAP], sh[1].tolist()
    (True, [0.5, 0.5])
    """
    bad = ~np.isfinite(scores)
    if not bad.any():
        return scores, shares
    log.warning("%d window(s) scored non-finite (a reading far beyond the model's range): reported at score %g",
                int(bad.sum()), SCORE_CAP)
    return np.where(bad, SCORE_CAP, scores), np.where(np.isfinite(shares), shares, 1.0 / shares.shape[1])


def _next_offsets(records: Iterable[Record]) -> dict[Partition, int]:
    """The offset to commit per partition: one past the last record seen.

    >>> _next_offsets([Record("t", 0, 5, None, b"", 0), Record("t", 0, 6, None, b"", 0)])
    {('t', 0): 7}
    """
    return {(r.topic, r.partition): r.offset + 1 for r in records}  # a partition's records come in offset order
