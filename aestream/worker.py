"""The worker: owns the loop between the Kafka edge and the domain (:mod:`aestream.app` builds it).

One step of the loop::

    poll records → decode (bad → dead letter) → windows per sensor → score the batch → alarm rule
    → anomaly events → producer flush → state records (changelogs) → producer flush → the stages' files
    (``Stage.delivered``) → commit offsets
    → a slice of the waiting fine-tunes (baselines.finetune_slice_ms; the poll does not block while any wait)

Offsets are committed only after the producer has acknowledged every event and dead letter of those offsets
(at-least-once); event ids are deterministic, so a replay after a crash repeats the same ids. State kept in
changelogs (baselines, the stages' state) is sent between the two, once the events are acknowledged, so a restored
state never reflects an event that was not delivered (its replayed window would not emit it again) and is never
behind the committed offsets. With a Kafka sink (:class:`~aestream.kafka.protocols.AckedSink`) the loop does not
stop for those acknowledgements while records may be waiting: a commit takes the offsets and the state of its moment
and goes on, a step at a time, as the broker acknowledges what was sent before it (then its state, then the offsets,
sent without waiting for the broker's answer when the source can: an offset it did not commit goes with the next
commit), one commit in flight at a time; an empty poll waits for it (up to ``ACK_WAIT_S``, then polls on), and
shutdown flushes and commits, waiting. With a count stride each commit carries, per partition, its sensors' window
phase (:mod:`aestream.stream.phase`); a worker given the partition restores it after the lookback replay, before the
first live record, so the windows close on the same readings as before (replayed offsets are below the committed
ones and are not committed again). A new model is swapped in only between steps, the alarm rule (the config's
``[threshold]`` k, n and smoothing) taking over the old one's per-sensor state (:meth:`AlarmRule.carry`).
``stop()`` (wired to SIGTERM/SIGINT by the CLI) ends the loop after the step in flight, which flushes and commits
before the worker closes.
"""

from __future__ import annotations

import gc
import logging
import operator
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aestream.config import Config
from aestream.detect.baselines import Baseline
from aestream.detect.thresholds import AlarmRule
from aestream.errors import BundleError, DeliveryError, InvalidReading
from aestream.kafka.protocols import AckedSink, AsyncCommitSource, Changelog, ModelSource, Sink, Source
from aestream.models.bundle import ModelBundle
from aestream.stream.codec import Block, Columns, ReadingDecoder
from aestream.stream.deadletters import dead_letter
from aestream.stream.events import anomaly_events, encode_event
from aestream.stream.lateness import LateReport, LateWatch
from aestream.stream.messages import Outgoing, Partition, Record
from aestream.stream.phase import PhaseCheckpoint
from aestream.stream.stages import Scored, Stage
from aestream.stream.windows import LATE, Cut, Window, Windower
from aestream.training.finetune import build_baselines

__all__ = ["StepStats", "Worker", "WorkerObserver"]

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
    calibrating: int = 0  # sensors calibrating their baseline at the end of the step (a gauge, not a count)
    model_version: str = ""
    events_out: list[dict[str, Any]] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)  # dead letters by kind (InvalidReading.kind)
    late_by_sensor: dict[str, int] = field(default_factory=dict)  # this step only: not kept in the totals


class WorkerObserver:
    """Watches the worker from its own thread (metrics, say): both hooks are no-ops until overridden."""

    def on_step(self, stats: StepStats, seconds: float) -> None:
        """A step ended after ``seconds``."""

    def on_model(self, bundle: ModelBundle) -> None:
        """``bundle`` is now served."""

    def on_model_refused(self, version: str, reason: str) -> None:
        """The store's ``version`` could not be served (a corrupt bundle, another channel set)."""


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
        wall_clock: Callable[[], float] = time.time,
        model_check_interval_s: float = 1.0,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        stages: Iterable[Stage] = (),
        observers: Iterable[WorkerObserver] = (),
        changelog: Changelog | None = None,
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.sink = sink
        self.models = models
        self.device = device
        self.clock = clock
        self.wall_clock = wall_clock  # bounds how far event time may run ahead (stream.max_future_ms)
        self.model_check_interval_s = model_check_interval_s
        self.on_event = on_event
        self.stages = list(stages)
        self.observers = list(observers)
        self.changelog = changelog
        s = cfg.stream
        self.decoder = ReadingDecoder(s.channels, s.max_message_bytes, s.max_readings_per_message, s.max_future_ms)
        self.lateness = LateWatch(s.n_late_report)
        self.windows = Windower(s.window_size, s.stride, len(s.channels), s.max_gap_ms, s.stride_ms)
        self._sensor_partition: dict[str, Partition] = {}
        self._unwindowed_warned: set[str] = set()  # sensors whose readings ran into a gap unscored (warned once)
        self._misrouted: set[str] = set()  # sensors whose messages were keyed otherwise (warned of once each)
        self._announce_in_replay: set[str] = set()  # restored baselines dropped: a replayed calibration is news
        self._restored_partition: dict[str, Partition] = {}  # sensors whose baseline was restored (sent or not)
        self._stop = threading.Event()
        self._closing = False
        self._last_model_check = -float("inf")
        self._refused: dict[str, tuple[float, float]] = {}  # version → (next try, wait before the one after)
        self._last_evict = clock()
        self._uncommitted: dict[Partition, int] = {}
        self._state_out: list[tuple[Partition, Outgoing]] = []  # baselines' changelog records, sent at the commit
        self._last_commit = clock()
        self._retry_at = -float("inf")  # after a failed commit, the next try waits COMMIT_RETRY_S
        self._acks = sink if isinstance(sink, AckedSink) else None  # commits go on while the loop polls
        self._in_flight: _Commit | None = None  # a commit waiting for its events (then its state) to be acknowledged
        self._lost: BaseException | None = None  # a delivery that failed: nothing is written or committed after it
        self._awaiting_model = False  # no model published yet (said once)
        # its offsets are then committed without waiting for the broker, when the source can (both Kafka sources)
        self._async = source if self._acks is not None and isinstance(source, AsyncCommitSource) else None
        self._committing: dict[Partition, int] = {}  # offsets sent so, not answered yet: the newest per partition
        self._unacknowledged = False  # an empty poll's wait for the broker's acknowledgements ran out (logged once)
        # a count stride's phase goes with the commits and is restored after a rebuild
        # each commit's checkpoint: the window phases of a count stride, the alarm state of sensors in an alarm
        self.phases = PhaseCheckpoint(self.windows, count_stride=s.stride > 1 and not s.stride_ms)
        self._alarms_restored: dict[Partition, set[str]] = {}  # sensors whose alarm state a checkpoint restored
        self._alarms_crowded = False  # warned that too many sensors were in alarm to carry their state
        self.bundle: ModelBundle | None = None
        self.rule: AlarmRule | None = None
        self.baselines = build_baselines(cfg)
        self.totals = StepStats()

    # -- model ------------------------------------------------------------------------------------------------
    def refresh_model(self, force: bool = False) -> None:
        """Swap in the store's current version if it changed (called between steps only). A version that is
        refused is tried again after 1, 2, 4 … up to ``MODEL_RETRY_MAX_S`` seconds (``force``: now) while the last
        good one serves;
        with none served yet, the newest older version that loads is served instead (the error only when none
        does)."""
        now = self.clock()
        if not force and now - self._last_model_check < self.model_check_interval_s:
            return
        self._last_model_check = now
        try:
            version = self.models.current()
        except BundleError as e:  # the store's pointer unreadable (its permissions): the served model goes on
            if self.bundle is None:
                raise
            log.error("the model store's current version cannot be read, still serving %s: %s",
                      self.bundle.version, e)
            return
        if version is None or (self.bundle is not None and version == self.bundle.version):
            return
        if not force and self.bundle is not None and now < self._refused.get(version, (now, 0.0))[0]:
            return
        try:
            bundle = self._load(version, now)
        except BundleError as e:
            if self.bundle is not None:
                return
            bundle = self._fallback(version, e, now)
        self._serve(bundle)

    def _load(self, version: str, now: float) -> ModelBundle:
        """Load and check ``version``; a refusal is logged, counted and remembered (its next try backs off)."""
        try:
            bundle = self.models.load(version, self.device)
            self._check_compatible(bundle)
        except BundleError as e:
            wait = self._refused.get(version, (0.0, 1.0))[1]
            self._refused[version] = (now + wait, min(2 * wait, MODEL_RETRY_MAX_S))
            serving = f"still serving {self.bundle.version}" if self.bundle else "serving none yet"
            log.error("model %s refused, %s; next try in %.0f s: %s", version, serving, wait, e)
            for observer in self.observers:
                observer.on_model_refused(version, str(e))
            raise
        self._refused.pop(version, None)
        return bundle

    def _fallback(self, version: str, error: BundleError, now: float) -> ModelBundle:
        """The newest version older than ``version`` that loads (for a worker serving none), else ``error``."""
        listed: list[str] = getattr(self.models, "versions", list)()
        older = listed[: listed.index(version)] if version in listed else listed
        for v in reversed(older):
            try:
                bundle = self._load(v, now)
            except BundleError:
                continue
            log.warning("serving %s, the newest version that loads, until %s (the current one) does", v, version)
            return bundle
        raise error

    def _serve(self, bundle: ModelBundle) -> None:
        version = bundle.version
        served = self.bundle
        previous = served.version if served else None
        self.bundle = bundle
        # the rule is this worker's config's: the bundle's ``alarm`` only records what its threshold was checked with
        t = self.cfg.threshold
        rule = AlarmRule(bundle.threshold, k=t.k, n=t.n, smoothing=t.smoothing, sensor_factors=t.sensors)
        ours = {"k": t.k, "n": t.n, "smoothing": t.smoothing, "critical_ratio": t.critical_ratio}
        if any(bundle.alarm.get(key, value) != value for key, value in ours.items()):
            log.info("model %s was trained with the alarm rule %s; this worker applies its config's [threshold] %s",
                     version, bundle.alarm, ours)
        if self.baselines is not None:  # judged by their old baselines (and model) until refitted under this one
            for sensor, baseline in self.baselines.ready.items():
                rule.set_threshold(sensor, baseline.threshold)
            # and those with their own model until fine-tuned again from it
            self.baselines.renew(version, (served.version, served.scorer) if served else None)
        if self.rule is not None and rule.carry(self.rule):  # the same rule: episodes go on through the swap
            log.info("the alarm rule's per-sensor state carried over to model %s", version)
        self.rule = rule
        log.info("serving model %s (%s, threshold %.4g, on %s), was %s", version, bundle.family, bundle.threshold,
                 bundle.scorer.device.type, previous)
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
            self._committing.pop(p, None)
        self._state_out = [(p, m) for p, m in self._state_out if p not in moved]  # nor that state to write
        if self._in_flight is not None:
            self._in_flight.forget(moved)
        gone = [s for s, p in self._sensor_partition.items() if p in moved]
        self.phases.forget(moved)
        self.windows.drop(gone)
        if self.rule is not None:  # with those restored before their first reading
            self.rule.drop([*gone, *(s for p in moved for s in self._alarms_restored.pop(p, ()))])
        for s in gone:
            del self._sensor_partition[s]
        if self._closing:
            return  # the partitions are given up because we stop: stages keep their state for a restart
        restored = [s for s, p in self._restored_partition.items() if p in moved]  # some may have sent nothing
        for s in restored:
            del self._restored_partition[s]
        self._announce_in_replay.difference_update([*gone, *restored])
        if self.baselines is not None:
            self.baselines.forget(dict.fromkeys([*gone, *restored]))
        for stage in self.stages:
            if gone:
                stage.forget(gone)
            stage.on_revoked(list(moved))

    def on_partitions_assigned(self, parts: list[Partition]) -> None:
        """Partitions given to this worker: forget what it held of them, then restore their sensors' baselines from
        the changelog, before their first record."""
        self.on_partitions_changed(parts)
        for stage in self.stages:
            stage.on_assigned(parts)
        if self.changelog is None or self.baselines is None:
            return
        restored: dict[str, Baseline] = {}
        unreadable: set[str] = set()
        for part, values in self.changelog.restore(parts).items():
            for s, v in values.items():
                try:
                    restored[s] = Baseline.from_json(v, self.device)
                except (ValueError, KeyError, TypeError, AttributeError, RuntimeError, EOFError) as e:
                    # another version's record, say: not a reason to lose the partition's other sensors
                    log.warning("baseline of sensor %r in the changelog (partition %s) is unreadable (%s: %s): it "
                                "calibrates again, and its next baseline overwrites the record", s, part,
                                type(e).__name__, e)
                    unreadable.add(s)
                    continue
                self._restored_partition[s] = part
        found = restored.keys() | unreadable
        restored = self.baselines.restore(restored)  # those that fit this worker's windows
        # the others calibrate again, from the replay on: their last owner announced no such calibration
        self._announce_in_replay.update(found - restored.keys())
        if self.rule is not None:
            for sensor, baseline in restored.items():
                self.rule.set_threshold(sensor, baseline.threshold)
        if restored:
            log.info("restored the baselines of %d sensor(s) of %s", len(restored), parts)
        if restored and self.bundle is not None:
            self._load_earlier_models()

    def _load_earlier_models(self) -> None:
        """Load the models of restored shared baselines of versions other than the serving one, which judge them
        until they refit (:meth:`SensorBaselines.judge_by_earlier`); one the store no longer serves, or one made for
        another ``stream.window_size`` or channels (it cannot take these windows), leaves its sensors to the
        serving model, over their old scales, meanwhile."""
        assert self.baselines is not None
        for version in sorted(self.baselines.earlier_versions()):
            try:
                bundle = self.models.load(version, self.device)
                self._check_compatible(bundle)
            except Exception as e:  # pruned, refused, for another stream: the serving model judges them meanwhile
                log.warning("the baselines restored under model %s refit under the serving one, which judges them "
                            "meanwhile: %s cannot be loaded for this stream (%s: %s)", version, version,
                            type(e).__name__, e)
                continue
            scorer = bundle.scorer
            n = self.baselines.judge_by_earlier(version, scorer)
            log.info("%d restored baseline(s) of model %s are judged by it until they refit", n, version)

    @property
    def state_pending(self) -> bool:
        """Whether state made since the last commit (a baseline) waits to be written."""
        return bool(self._state_out) or (self._in_flight is not None and self._in_flight.has_state)

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
        """One poll → process (events are sent as they are found) → commit, at most every
        ``kafka.commit_interval_ms`` and whenever a poll comes back empty (with only state to write, too): after
        records the commit goes on in flight (:meth:`_begin_commit`, :meth:`_advance_commit`), after an empty poll
        the step waits for it (:meth:`_await_commit`); without a sink that reports acknowledgements it flushes.
        A step that raises leaves the worker as a failed delivery does (:meth:`_lose`): a send that raised queued
        nothing, while the state already counts its message sent."""
        try:
            return self._step()
        except Exception as e:
            if self._lost is None:
                self._lose(e)
            raise

    def _step(self) -> StepStats:
        self._check_delivered()
        t0 = time.perf_counter()
        self.refresh_model()
        if self.bundle is None:
            return self._await_model()
        # with fine-tunes waiting the poll does not block: the time it would wait goes to them (below)
        background = self.baselines is not None and self.baselines.background_waiting
        records = self.source.poll(timeout_ms=0) if background else self.source.poll()
        self._take_committed_metadata()
        stats = self.process(records)
        if records:
            self._uncommitted.update(_next_offsets(r for r in records if not r.replay))
        interval_s = self.cfg.kafka.commit_interval_ms / 1000
        now = self.clock()
        # an empty poll also writes state made without records (a fine-tune finished while the input was quiet)
        due = not records or now - self._last_commit >= interval_s
        wanted = due and self._commit_wanted(now, bool(records))
        if self._acks is None:  # no acknowledgements to watch: flush and wait
            if wanted:
                self.commit()
        elif records:  # more records may be waiting: the commit goes on while the loop polls
            self._advance_commit()
            if wanted and self._in_flight is None:
                self._begin_commit()
                self._advance_commit()
        else:  # an empty poll: nothing else to do meanwhile
            self._await_commit(ACK_WAIT_S)
        self._evict_idle()
        if self.baselines is not None:
            stats.calibrating = self.baselines.n_calibrating
        self._add_totals(stats)
        if self.observers:
            seconds = time.perf_counter() - t0
            for observer in self.observers:
                observer.on_step(stats, seconds)
        if self.baselines is not None and self.baselines.background_waiting:  # after the commit, before the next poll
            self._finetune()
        return stats

    def _await_model(self) -> StepStats:
        """A step while no model is published: no poll (no partition is taken, no record read) until one is; the
        observers still see a step, so the worker is alive and not ready (``model_loaded`` 0)."""
        if not self._awaiting_model:
            self._awaiting_model = True
            log.warning("no model is published yet: waiting for one (aestream train, or the fleet's trainer), "
                        "checking every %g s; no records are read meanwhile", self.model_check_interval_s)
        self._stop.wait(self.model_check_interval_s)
        stats = StepStats()
        for observer in self.observers:
            observer.on_step(stats, 0.0)
        return stats

    def commit(self, flush_timeout_s: float = 60.0) -> None:
        """Flush what was sent, then write the state (and flush it), then commit the offsets processed so far
        (never in another order). Blocks (each flush up to ``flush_timeout_s``); takes over a commit in flight."""
        self._check_delivered()
        before: list[Outgoing] = []
        # oldest first, each overwritten by the newer: the offsets sent without waiting and not answered yet (no
        # answer is awaited), then those of the commit in flight (its state unsent goes first), then the rest
        offsets, self._committing = dict(self._committing), {}
        if self._in_flight is not None:
            c, self._in_flight = self._in_flight, None
            offsets.update(c.offsets)
            before = [m for _, m in c.state]
        self._uncommitted = {**offsets, **self._uncommitted}
        try:
            self.sink.flush(flush_timeout_s)
            state = before + [m for _, m in self._state_out] + [m for stage in self.stages for _, m in stage.state()]
            self._state_out = []
            if state:
                for msg in state:
                    self.sink.send(msg)
                self.sink.flush(flush_timeout_s)
            self._delivered()
        except BaseException as e:
            self._lose(e)
            raise
        self._commit_offsets(*self._take_offsets())

    def _begin_commit(self) -> None:
        """Take the offsets processed so far and the state that reflects them, and mark what was sent until now:
        :meth:`_advance_commit` sends the state once those messages are acknowledged, and commits the offsets once
        the state is."""
        assert self._acks is not None
        offsets, metadata = self._take_offsets()
        state = [*self._state_out] + [pm for stage in self.stages for pm in stage.state()]
        self._state_out = []
        self._in_flight = _Commit(self._acks.mark(), state, offsets, metadata)
        self._last_commit = self.clock()

    def _advance_commit(self) -> None:
        """Take the commit in flight as far as its acknowledgements allow, without waiting."""
        c = self._in_flight
        if c is None:
            return
        assert self._acks is not None
        try:
            if not self._acks.acked(c.mark):
                return
            if c.state:  # its events are acknowledged: now the state that reflects them
                for _, msg in c.state:
                    self.sink.send(msg)
                c.state, c.mark = [], self._acks.mark()
                if not self._acks.acked(c.mark):
                    return
            self._delivered()
        except BaseException as e:
            self._lose(e)
            raise
        self._in_flight = None
        if self._async is None:
            self._commit_offsets(c.offsets, c.metadata)
        elif c.offsets:  # the broker's answer comes to _commit_answered from a later poll
            self._committing.update(c.offsets)
            self._last_commit = self.clock()
            self._async.commit_async(c.offsets, c.metadata or None, self._commit_answered)

    def _await_commit(self, timeout_s: float) -> None:
        """After an empty poll: begin a commit of what is not committed yet, and wait for the commits up to
        ``timeout_s`` (or :meth:`stop`). A broker that has not acknowledged by then fails nothing: the commit
        stays in flight, the loop polls again (keeping its group membership), and the next empty poll waits again.
        A message that failed (its delivery timed out) raises as in :meth:`commit`."""
        assert self._acks is not None
        deadline = time.monotonic() + timeout_s
        for _ in range(2):  # the commit in flight, then one of what came after it
            if self._in_flight is None:
                if not self._commit_wanted(self.clock(), polled_records=False):
                    break
                self._begin_commit()
            while self._in_flight is not None:
                if self._stop.is_set():
                    return  # close() commits
                left = deadline - time.monotonic()
                if left <= 0:
                    if not self._unacknowledged:
                        log.warning("the broker has not acknowledged a commit's messages in %g s; the commit "
                                    "waits for them, and the loop polls on meanwhile", timeout_s)
                    self._unacknowledged = True
                    return
                try:
                    acked = self._acks.acked(self._in_flight.mark, timeout_s=min(left, ACK_WAIT_SLICE_S))
                except BaseException as e:
                    self._lose(e)
                    raise
                if acked:
                    self._advance_commit()
        if self._unacknowledged:
            log.info("the broker acknowledges again; the commits go on")
            self._unacknowledged = False

    def _delivered(self) -> None:
        """The commit's events and state are delivered, its offsets not yet committed: the stages save what they
        keep outside a changelog."""
        for stage in self.stages:
            stage.delivered()

    def _lose(self, error: BaseException) -> None:
        """A message sent failed (or a step raised): its event may be lost, so the records since the last commit
        must be read again.
        This worker commits no offset and writes no state from now on (its state may reflect the lost events: the
        next owner replays those records and rebuilds it); :meth:`close` only closes the clients."""
        self._lost = error
        self._uncommitted, self._committing, self._in_flight, self._state_out = {}, {}, None, []

    def _check_delivered(self) -> None:
        if self._lost is not None:
            raise DeliveryError(f"a message sent earlier failed ({self._lost}): this worker commits nothing more; "
                                "start it again (the records since its last commit are read again)") from self._lost

    def _commit_wanted(self, now: float, polled_records: bool) -> bool:
        """Whether there is something to commit (offsets; or state made without records, written at an empty
        poll) and no failed commit's pause is running."""
        return bool(self._uncommitted or (self._state_out and not polled_records)) and now >= self._retry_at

    def _take_offsets(self) -> tuple[dict[Partition, int], dict[Partition, str]]:
        """The offsets processed so far, taken, with the window phases they are committed with."""
        offsets, self._uncommitted = self._uncommitted, {}
        if not offsets:
            return offsets, {}
        alarms = None
        if self.rule is not None:
            alarms = self.rule.states(MAX_ALARM_STATES)
            if alarms is None and not self._alarms_crowded:
                self._alarms_crowded = True
                log.warning("more than %d sensors are in or near an alarm (threshold.n): offset commits go without "
                            "the alarm rule's state while they are, so after a restart their alarms hold only as far "
                            "as the lookback replays them", MAX_ALARM_STATES)
        return offsets, self.phases.metadata(self._sensor_partition, offsets, alarms)

    def _commit_offsets(self, offsets: dict[Partition, int], metadata: dict[Partition, str]) -> None:
        done = self.source.commit(offsets, metadata) if metadata else self.source.commit(offsets)
        self._last_commit = self.clock()
        if done is False:  # the broker is away or the group moved on: the offsets go with a later commit
            offsets.update(self._uncommitted)
            self._uncommitted = offsets
            self._retry_at = self._last_commit + COMMIT_RETRY_S
        else:
            self._retry_at = -float("inf")

    def _commit_answered(self, offsets: dict[Partition, int], ok: bool) -> None:
        """The broker's answer to offsets committed without waiting. Those it did not commit go with the next
        commit, unless a newer offset of their partition is on its way (sent, or in a commit in flight, or
        processed since) or their partition moved."""
        for p, offset in offsets.items():
            if self._committing.get(p) != offset:
                continue  # a newer commit of p was sent, or p moved, or commit() took it over
            del self._committing[p]
            if not ok and p not in self._uncommitted and (self._in_flight is None or p not in self._in_flight.offsets):
                self._uncommitted[p] = offset
        self._retry_at = -float("inf") if ok else self.clock() + COMMIT_RETRY_S

    def _take_committed_metadata(self) -> None:
        take = getattr(self.source, "committed_metadata", None)
        if take is not None:
            self.phases.expect(take())

    def process(self, records: list[Record]) -> StepStats:
        """Decode, window, score and emit for a batch of records (no flush, no commit)."""
        assert self.bundle is not None and self.rule is not None, "refresh_model() first"
        stats = StepStats(records=len(records), model_version=self.bundle.version)
        now = self.clock()
        for part in _chunks(records, CHUNK_BYTES):  # as polls of at most ~1 MiB: a step's arrays stay in the caches
            closed = _Closed()
            if self.phases.pending:  # a replay with a committed checkpoint ends in or before this part
                replayed = [r for r in part if r.replay]
                part = [r for r in part if not r.replay]
                if replayed:
                    self._window(replayed, closed, stats, now)
                    if closed:  # scored before the checkpoint's alarm states replace what they rebuilt
                        self._to_stages(self._score(closed, stats))
                        closed = _Closed()
                restored = self.phases.restore({(r.topic, r.partition) for r in part}, self._sensor_partition)
                for p, states in restored.items():
                    self.rule.restore(states, [s for s, q in self._sensor_partition.items() if q == p])
                    self._alarms_restored.setdefault(p, set()).update(states)
            self._window(part, closed, stats, now)
            if closed:
                self._to_stages(self._score(closed, stats))
        if self.windows.unwindowed:
            self._warn_unwindowed()
        late = self._late_reports(stats, now)
        for stage in self.stages:
            for msg in stage.on_tick(now) + (stage.on_late(late) if late else []):
                self.sink.send(msg)
        return stats

    def _to_stages(self, scored: list[Scored]) -> None:
        if scored:
            for stage in self.stages:
                for msg in stage.on_scored(scored):
                    self.sink.send(msg)

    def _warn_unwindowed(self) -> None:
        """Warn once a sensor whose readings run out into a gap before they fill a window: none of them is
        scored (a sampling interval above ``stream.max_gap_ms`` makes every reading such a gap)."""
        for sensor, n in self.windows.unwindowed.items():
            if sensor not in self._unwindowed_warned and len(self._unwindowed_warned) < MISROUTED_WARNINGS:
                self._unwindowed_warned.add(sensor)
                log.warning("sensor %s: %d reading(s) ended in a gap (> stream.max_gap_ms = %d ms) before they filled "
                            "a window of stream.window_size = %d: they are scored in no window; a sensor sampled "
                            "less often than max_gap_ms is never scored", sensor, n, self.cfg.stream.max_gap_ms,
                            self.cfg.stream.window_size)
        self.windows.unwindowed.clear()

    def _late_reports(self, stats: StepStats, now: float) -> list[LateReport]:
        """The sensors that just reached ``stream.n_late_report`` late readings within a minute, logged."""
        if not stats.late_by_sensor and not self.lateness.due:
            return []
        reports = self.lateness.observe(stats.late_by_sensor, now, int(self.wall_clock() * 1000))
        if reports:
            log.warning("%s (stream.n_late_report = %d): each was not after its sensor's newest reading "
                        "(duplicates, retries, or a clock fault at the source)",
                        ", ".join(f"sensor {r.sensor} dropped {r.n_late} late readings within {r.period_s:.0f} s"
                                  for r in reports[:10])
                        + (f" and {len(reports) - 10} more sensors" if len(reports) > 10 else ""),
                        self.lateness.n_report)
        return reports

    def _window(self, records: list[Record], closed: _Closed, stats: StepStats, now: float) -> None:
        """Decode records into the windows (bad ones to the dead-letter topic), adding the windows they close."""
        docs: list[Any] = [r.decoded for r in records]
        if docs.count(None) == len(docs):
            docs = self.decoder.parse_many([r.value for r in records])
            columns = self.decoder.columns(docs) if len(docs) > 1 else None
        else:  # batches the edge decoded (Block): only the others are parsed here
            todo = [i for i, doc in enumerate(docs) if doc is None]
            for i, doc in zip(todo, self.decoder.parse_many([records[i].value for i in todo])):
                docs[i] = doc
            columns = None
        now_ms = int(self.wall_clock() * 1000)
        if columns is not None and self.decoder.any_ahead(
                columns.ts_ms, np.fromiter(map(_RECORD_TS, records), np.int64, len(records)), now_ms):
            columns = None  # one by one: each message far ahead is dead-lettered with its reason
        if columns is not None:
            if list(map(_RECORD_KEY, records)) != list(map(str.encode, columns.sensors)):  # ~0.14 µs a record
                for rec, sensor in zip(records, columns.sensors):
                    self._check_key(rec, sensor)
            self._push_columns(records, columns, closed, stats, now)
            return
        dlq = self.cfg.kafka.dead_letter_topic
        blocks: list[tuple[Record, Block]] = []  # cut together (Windower.cut_blocks), before any later reading

        def push_blocks() -> None:
            cut = self.windows.cut_blocks([b for _, b in blocks], now)
            for (rec, block), late in zip(blocks, cut.late):
                if late and not rec.replay:  # a replay's were counted and reported when first read
                    _count_late(stats, block.sensor, late)
            recs = [rec for rec, _ in blocks]
            closed.add_cut(cut, list(map(recs.__getitem__, cut.block)))
            blocks.clear()

        for rec, doc in zip(records, docs):
            stats.replayed += rec.replay
            try:
                readings = self.decoder.from_doc(doc)
                self.decoder.check_time(readings, rec.timestamp_ms, now_ms)
            except InvalidReading as e:
                if not rec.replay:
                    self.sink.send(dead_letter(dlq, rec, str(e), self.cfg.kafka.dead_letter_max_bytes))
                    stats.dead_letters += 1
                    stats.rejected[e.kind] = stats.rejected.get(e.kind, 0) + 1
                continue
            part = (rec.topic, rec.partition)
            if isinstance(readings, Block):
                self._check_key(rec, readings.sensor)
                self._sensor_partition[readings.sensor] = part
                stats.readings += len(readings.ts_ms)
                blocks.append((rec, readings))
                continue
            if blocks:
                push_blocks()
            if len(readings) == 1 or len({r.sensor for r in readings}) == 1:  # a batch of several sensors has no key
                self._check_key(rec, readings[0].sensor)
            for r in readings:
                stats.readings += 1
                self._sensor_partition[r.sensor] = part
                w = self.windows.push(r.sensor, r.ts_ms, r.values, now)
                if w is LATE:
                    if not rec.replay:
                        _count_late(stats, r.sensor, 1)
                elif w is not None:
                    closed.add(w, rec)  # type: ignore[arg-type]
        if blocks:
            push_blocks()

    def _check_key(self, rec: Record, sensor: str) -> None:
        """Warn, once a sensor, of a message of its readings keyed by anything but its id: the producer's
        partitioner may then spread the sensor over partitions, where its readings mix into other owners' windows
        and come late to each (dropped). The readings are taken as they are."""
        if sensor in self._misrouted or rec.replay or rec.key == sensor.encode():
            return
        if len(self._misrouted) < MISROUTED_WARNINGS:
            self._misrouted.add(sensor)
            log.warning("sensor %s: the message at %s[%d]@%d is keyed %s, not by its sensor id: a producer that keys "
                        "a sensor's readings otherwise can spread them over partitions, where they are windowed "
                        "apart and dropped as late; key each reading by its sensor id (docs/formats.md)", sensor,
                        rec.topic, rec.partition, rec.offset, "by nothing (null)" if rec.key is None else repr(rec.key))

    def _push_columns(self, records: list[Record], columns: Columns, closed: _Closed, stats: StepStats,
                      now: float) -> None:
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
            # a replay's late readings were counted and reported when first read; a partition's replay comes
            # before its live records, so a run is all replayed, all live, or replayed up to some point
            if len(idx) < 128 or (first.replay and not records[idx[-1]].replay):
                push = self.windows.push  # a block costs ~20 numpy calls: one by one is cheaper for short runs
                for i in idx:
                    w = push(sensor, stamps[i], values[i], now)
                    if w is not None:
                        if w is not LATE:
                            closed.add(w, records[i])  # type: ignore[arg-type]
                        elif not records[i].replay:
                            _count_late(stats, sensor, 1)
                continue
            cut = self.windows.cut_blocks([(sensor, columns.ts_ms[idx], columns.values[idx])], now)
            if cut.late[0] and not first.replay:
                _count_late(stats, sensor, cut.late[0])
            closed.add_cut(cut, [records[idx[j]] for j in cut.at])

    def _score(self, closed: _Closed, stats: StepStats) -> list[Scored]:
        assert self.bundle is not None and self.rule is not None
        b = self.bundle
        errors = None
        if self.baselines is not None:
            closed = self._calibrate(closed)
            if not closed:
                return []
            batch, errors = self.baselines.score(closed.values(), closed.sensors, b.scorer)
        else:
            batch = b.scorer.score(closed.values())
        sensors = closed.sensors
        scores, shares = _finite(batch.scores, batch.shares)
        critical = self.cfg.threshold.critical_ratio
        stats.windows += len(closed)
        topic = self.cfg.kafka.output_topic
        scored: list[Scored] = []
        smooth, alarms = self._alarms(sensors, scores)
        keep = bool(self.stages)  # the scored windows are only for the stages
        recs = closed.recs
        emit = [i for i in np.flatnonzero(alarms).tolist() if not recs[i].replay]  # a replay emits nothing
        events = dict(zip(emit, self._events(closed, emit, smooth, shares, critical))) if emit else {}
        todo = range(len(closed)) if keep else emit
        for i in todo:
            sensor, rec = sensors[i], recs[i]
            event = events.get(i)
            if event is None:
                if keep:
                    scored.append(Scored(closed.window(i), float(smooth[i]), self.rule.threshold_for(sensor),
                                         bool(alarms[i]), shares[i], b.version, None, rec.replay,
                                         (rec.topic, rec.partition)))
                continue
            self.sink.send(Outgoing(topic, encode_event(event), sensor.encode()))
            stats.events += 1
            stats.events_out.append(event)
            if keep:
                scored.append(Scored(closed.window(i), float(smooth[i]), event["threshold"], True, shares[i],
                                     b.version, event, False, (rec.topic, rec.partition)))
            if self.on_event:
                self.on_event(event)
        # after the events and the scored windows: they carry the thresholds their alarms were decided with
        if self.baselines is not None and errors is not None:
            for sensor, baseline in self.baselines.refresh(sensors, errors, alarms, b.scorer, b.version,
                                                              closed.end_ms):
                self._baseline_ready(sensor, baseline)
                log.info("baseline of %s refitted under model %s: threshold %.4g", sensor, b.version,
                         baseline.threshold)
            self.baselines.gather(closed, alarms, b.scorer, b.version)  # readings for fine-tunes, faults left out
        return scored

    def _events(self, closed: _Closed, emit: list[int], smooth: np.ndarray, shares: np.ndarray,
                critical: float) -> list[dict[str, Any]]:
        """The anomaly events of windows ``emit`` of ``closed``, built together (:func:`anomaly_events`)."""
        assert self.bundle is not None and self.rule is not None
        b, sensors, recs = self.bundle, closed.sensors, closed.recs
        threshold_for = self.rule.threshold_for
        return anomaly_events(
            sensors=[sensors[i] for i in emit], window_start_ms=[closed.start_ms[i] for i in emit],
            window_end_ms=[closed.end_ms[i] for i in emit], scores=smooth[emit],
            thresholds=np.array([threshold_for(sensors[i]) for i in emit]), critical_ratio=critical,
            channels=b.channels, shares=shares[emit], model_version=b.version, model_family=b.family,
            sources=[(r.topic, r.partition, r.offset) for r in map(recs.__getitem__, emit)])

    def _calibrate(self, closed: _Closed) -> _Closed:
        """Take the windows of sensors still calibrating out of ``closed``; finish the calibrations that are due."""
        assert self.baselines is not None and self.bundle is not None and self.rule is not None
        split = self.baselines.split(closed, self.bundle.scorer, self.bundle.version)
        for sensor, end_ms, i in split.started:  # replayed readings calibrate too, but a replay emits nothing
            if not closed.recs[i].replay or sensor in self._announce_in_replay:
                self._notify_calibration(sensor, end_ms, None)
            self._announce_in_replay.discard(sensor)
        for sensor, end_ms, baseline, scores in split.finished:
            self._baseline_ready(sensor, baseline)
            self.rule.update_many(sensor, scores)  # the rule's smoothing and k-of-n run on from calibration
            self._notify_calibration(sensor, end_ms, baseline)
        return closed if len(split.keep) == len(closed) else closed.take(split.keep)

    def _finetune(self) -> None:
        """A slice of this thread for the waiting fine-tunes; the sensors whose own model is done are judged by it
        from now on."""
        assert self.baselines is not None
        self.baselines.work(self.cfg.baselines.finetune_slice_ms / 1000)
        for sensor, baseline, _ in self.baselines.finetuned():
            self._baseline_ready(sensor, baseline)
            log.info("sensor %s now judged by its own fine-tuned model: threshold %.4g", sensor, baseline.threshold)

    def _baseline_ready(self, sensor: str, baseline: Baseline) -> None:
        """Judge ``sensor`` by ``baseline`` from now on; write it to the changelog at the next commit (after the
        events sent until then are flushed, before the offsets are committed)."""
        assert self.rule is not None
        self.rule.set_threshold(sensor, baseline.threshold)
        part = self._sensor_partition.get(sensor)
        if self.changelog is not None and part is not None:
            self._state_out.append((part, self.changelog.record(part, sensor, baseline.to_json())))

    def _notify_calibration(self, sensor: str, end_ms: int, baseline: Baseline | None) -> None:
        """A sensor started calibrating (no ``baseline`` yet) or finished, at the window ending at ``end_ms``."""
        if baseline is not None:
            log.info("sensor %s calibrated on %d readings: threshold %.4g", sensor, baseline.n_readings,
                     baseline.threshold)
        else:
            log.info("sensor %s calibrates its baseline on its first %d readings", sensor,
                     self.cfg.baselines.n_readings)
        for stage in self.stages:
            for msg in stage.on_calibration(sensor, end_ms, baseline):
                self.sink.send(msg)

    def _alarms(self, sensors: list[str], scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The alarm rule over the batch's windows, each run of one sensor's windows at once."""
        assert self.rule is not None
        smoothed, alarms = np.empty(len(sensors)), np.empty(len(sensors), dtype=bool)
        starts = [0, *(i for i in range(1, len(sensors)) if sensors[i] != sensors[i - 1]), len(sensors)]
        for i, j in zip(starts, starts[1:]):
            if j - i <= SHORT_RUN:  # a few windows: the scalar rule costs less than update_many's array set-up
                for t in range(i, j):
                    smoothed[t], alarms[t] = self.rule.update(sensors[t], float(scores[t]))
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
                self.rule.rest(gone)  # a sensor's baseline outlives its silence: so does its own threshold
            if self.baselines is not None:  # what they gathered goes; a baseline stays, and its partition (a
                self.baselines.rest(gone)  # fine-tune that ends is written there, a move forgets the baseline)
            for s in gone:
                if self.baselines is None or s not in self.baselines.ready:
                    self._sensor_partition.pop(s, None)
            for stage in self.stages:
                stage.evict(gone)
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
        t.calibrating = s.calibrating
        for kind, n in s.rejected.items():
            t.rejected[kind] = t.rejected.get(kind, 0) + n
        t.model_version = s.model_version or t.model_version

    def close(self) -> None:
        """Close the stages (sending what they return), flush what is in flight and close both clients; after a
        failed delivery (:meth:`_lose`) only close them."""
        self._closing = True
        gc.unfreeze()  # what was frozen at the first model is collectable again (and at exit)
        if self.baselines is not None:
            self.baselines.close()
        undelivered = self._lost is not None
        try:
            for stage in self.stages:
                out = stage.close()
                if not undelivered:
                    for msg in out:
                        self.sink.send(msg)
                elif out:  # webhook deliveries given up on, say: their records may be committed already
                    log.warning("%d message(s) of %s not sent (%s): %s", len(out), type(stage).__name__,
                                "the worker stops after a failure", ", ".join(sorted({m.topic for m in out})))
            if undelivered:
                log.warning("stopping without committing the offsets processed since the last commit (%s: %s); "
                            "those records are read again at the next start",
                            "a message sent failed" if isinstance(self._lost, DeliveryError) else "a step failed",
                            self._lost)
            else:
                self.commit(CLOSE_FLUSH_S)
                if self._uncommitted:  # delivered, but the broker did not commit the offsets (kept for a retry)
                    raise DeliveryError("the broker did not commit the offsets")
        except DeliveryError as e:  # the broker away: a stop does not wait for it any longer
            undelivered = True
            raise DeliveryError(f"stopped without committing the last offsets: {e}. The records since the last "
                                "commit are read again at the next start (nothing is lost; their events may come "
                                "twice)") from e
        finally:
            self.source.close()
            if undelivered:
                self.sink.close(0.0)  # what it holds had its time
            else:
                self.sink.close()


@dataclass
class _Commit:
    """A commit in flight: the offsets processed until it began, the state that reflects them, each record with
    its input partition (sent once the messages before ``mark`` are acknowledged) and, after that, the mark after
    the state."""

    mark: int
    state: list[tuple[Partition, Outgoing]]
    offsets: dict[Partition, int]
    metadata: dict[Partition, str]
    has_state: bool = field(init=False)

    def __post_init__(self) -> None:
        self.has_state = bool(self.state)

    def forget(self, moved: set[Partition]) -> None:
        """Partitions that moved: their offsets are not ours to commit, nor their state to write (the new owner may
        have written newer state already)."""
        for p in moved:
            self.offsets.pop(p, None)
            self.metadata.pop(p, None)
        self.state = [(p, m) for p, m in self.state if p not in moved]


class _Closed:
    """A step's closed windows in order, column by column, each with the record whose reading closed it: scoring
    takes the sensors and one array of values, and a :class:`Window` is made only for what needs one."""

    __slots__ = ("_parts", "end_ms", "n_new", "recs", "sensors", "start_ms")

    def __init__(self) -> None:
        self.sensors: list[str] = []
        self.start_ms: list[int] = []
        self.end_ms: list[int] = []
        self.n_new: list[int] = []
        self.recs: list[Record] = []
        self._parts: list[np.ndarray] = []  # (k, window_size, C) each, in order

    def __len__(self) -> int:
        return len(self.sensors)

    def __getitem__(self, i: int) -> Window:
        return self.window(i)

    def add(self, w: Window, rec: Record) -> None:
        self.sensors.append(w.sensor)
        self.start_ms.append(w.start_ms)
        self.end_ms.append(w.end_ms)
        self.n_new.append(w.n_new)
        self.recs.append(rec)
        self._parts.append(w.values[np.newaxis])

    def add_cut(self, cut: Cut, recs: list[Record]) -> None:
        """The windows of ``cut``, ``recs`` the record of each."""
        if cut.sensors:
            self.sensors += cut.sensors
            self.start_ms += cut.start_ms
            self.end_ms += cut.end_ms
            self.n_new += cut.n_new
            self.recs += recs
            self._parts.append(cut.values)

    def values(self) -> np.ndarray:
        """``(windows, window_size, C)``: one array (made once)."""
        if len(self._parts) > 1:
            self._parts = [np.concatenate(self._parts)]
        return self._parts[0]

    def window(self, i: int) -> Window:
        return Window(self.sensors[i], self.start_ms[i], self.end_ms[i], self.values()[i], self.n_new[i])

    def take(self, keep: list[int]) -> _Closed:
        """These windows only, in this order."""
        out = _Closed()
        out.sensors = [self.sensors[i] for i in keep]
        out.start_ms = [self.start_ms[i] for i in keep]
        out.end_ms = [self.end_ms[i] for i in keep]
        out.n_new = [self.n_new[i] for i in keep]
        out.recs = [self.recs[i] for i in keep]
        out._parts = [self.values()[keep]] if keep else []
        return out


COMMIT_RETRY_S = 1.0
CLOSE_FLUSH_S = 20.0
"""How long a stop waits for the broker to acknowledge what the last commit flushes (events, then state, each);
a stop during an outage then takes 20–40 s with the clients' closes, inside the 60 s that ``deploy/`` gives a stop
before it kills."""

ACK_WAIT_S = 60.0  # an empty poll waits this long for the broker to acknowledge a commit's messages, then polls again
ACK_WAIT_SLICE_S = 0.1  # and looks at stop() this often meanwhile
SHORT_RUN = 12  # a sensor's windows in one step up to this many go through the scalar rule (~1.5 µs a window against
# ~25 µs a call for update_many, measured)
MODEL_RETRY_MAX_S = 300.0  # a refused model version is tried again at most this far apart
_RECORD_TS = operator.attrgetter("timestamp_ms")
_RECORD_KEY = operator.attrgetter("key")
MISROUTED_WARNINGS = 100
# At most this many sensors' alarm states are gathered for a commit (~1 µs of CPU each, at every commit): about a
# partition's worth fits in its metadata (~450 sensors named like plant-3/pump-00042 in 4096 bytes)
MAX_ALARM_STATES = 4096
"""How many sensors a worker warns of for messages not keyed by their sensor id (one warning each)."""

CHUNK_BYTES = 1 << 20
"""The most message bytes :meth:`Worker.process` windows and scores at once. A poll can hold far more (librdkafka
queues whatever it prefetched: 2,000 batched messages, 200,000 readings), and a step's arrays then outgrow the
caches: in service, in process, batched messages of 100 readings ran at 770k–780k readings/s in steps of 100–200
messages, 640k–680k at 500 and 460k–570k at 2,000 (docs/benchmarks.md)."""

SCORE_CAP = float(np.finfo(np.float32).max)


def _chunks(records: list[Record], limit: int) -> Iterable[list[Record]]:
    """``records`` in order, cut into runs of at most ``limit`` bytes of values (a longer message alone)."""
    if len(records) < 2 or sum(len(r.value) for r in records if r.value is not None) <= limit:
        yield records  # the common poll: one sum (81 µs for 2,000 messages; the loop below takes 132)
        return
    start, size = 0, 0
    for i, r in enumerate(records):
        n = len(r.value) if r.value is not None else 0
        if size + n > limit and i > start:
            yield records[start:i]
            start, size = i, 0
        size += n
    yield records[start:]


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


def _count_late(stats: StepStats, sensor: str, n: int) -> None:
    stats.late += n
    stats.late_by_sensor[sensor] = stats.late_by_sensor.get(sensor, 0) + n


def _next_offsets(records: Iterable[Record]) -> dict[Partition, int]:
    """The offset to commit per partition: one past the last record seen.

    >>> _next_offsets([Record("t", 0, 5, None, b"", 0), Record("t", 0, 6, None, b"", 0)])
    {('t', 0): 7}
    """
    return {(r.topic, r.partition): r.offset + 1 for r in records}  # a partition's records come in offset order
