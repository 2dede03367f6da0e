"""The alert stage: scored windows → episodes and data-quality events → routed to topics, webhooks, the log.

It implements the worker's :class:`~aestream.stream.stages.Stage` protocol. Topic deliveries are returned as
:class:`~aestream.stream.messages.Outgoing`, so they are flushed before the step's offsets are committed; webhooks run
on their own threads and their give-ups come back as dead letters on a later tick. With a changelog, each changed
sensor's state goes out from :meth:`AlertStage.state`, which the worker calls only once those events are flushed.

Replayed windows (``Scored.replay``) rebuild episode state and emit nothing. Without a changelog the state is
saved to ``state_path`` instead: a snapshot taken when the worker asks for the state (:meth:`AlertStage.state`) is
written once the worker reports the events before it delivered (:meth:`AlertStage.delivered`), before it commits
their offsets; so a restart never skips an event that was not delivered, and a failed delivery writes nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aestream.alerts.documents import calibration_event, episode_event, late_event, quality_event, top_channels
from aestream.alerts.episodes import EpisodeTracker
from aestream.alerts.routing import (
    Bands,
    LogSpec,
    Router,
    SinkSpec,
    TopicSpec,
    WebhookSpec,
    check_alerts,
    parse_bands,
    parse_routes,
    parse_sinks,
)
from aestream.alerts.silence import SilenceWatch
from aestream.alerts.sinks import DeadLetter, Post, WebhookSink, log_event, post_json
from aestream.alerts.state import read_state, write_state
from aestream.config import Config
from aestream.errors import AlertStateError
from aestream.kafka.protocols import Changelog
from aestream.stream.events import encode_event, ratio_of
from aestream.stream.lateness import LateReport
from aestream.stream.messages import Outgoing, Partition
from aestream.stream.stages import Scored, Stage

__all__ = ["AlertStage", "build_alert_stage"]

log = logging.getLogger(__name__)


class AlertStage(Stage):
    """Episodes, silence detection and routing for one worker."""

    def __init__(
        self,
        *,
        channels: tuple[str, ...],
        bands: Bands,
        router: Router,
        sinks: dict[str, SinkSpec],
        dead_letter_topic: str,
        n_resolve_windows: int = 5,
        cooldown_ms: int = 0,
        silent_after_s: float = 0.0,
        silent_lag_ms: int = 0,
        sensor_ttl_s: float = float("inf"),
        state_path: Path | None = None,
        persist_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        post: Post = post_json,
        on_give_up: Callable[[str], None] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        changelog: Changelog | None = None,
    ) -> None:
        self.channels, self.router, self.sinks = channels, router, sinks
        self.dead_letter_topic = dead_letter_topic
        self.tracker = EpisodeTracker(bands, n_resolve_windows, cooldown_ms)
        self.silence = SilenceWatch(silent_after_s, silent_lag_ms)
        if changelog is not None:
            state_path = None  # the state lives in the partitions' changelog, not in a file
        self.state_path, self.persist_interval_s, self.clock = state_path, persist_interval_s, clock
        self.changelog = changelog
        self._parts: dict[str, tuple[str, int]] = {}  # each sensor's input partition, for its changelog record
        self._changed: set[str] = set()  # sensors whose state the changelog must get in this step
        # restored from the changelog, no window since: when restored (processing time), so that those that send
        # none for sensor_ttl_s are evicted as the worker evicts its idle sensors (its windows never held them)
        self._restored_at: dict[str, float] = {}
        self.sensor_ttl_s = sensor_ttl_s
        self._last_evict = -float("inf")
        self.webhooks = {n: WebhookSink(n, s, post) for n, s in sinks.items() if isinstance(s, WebhookSpec)}
        self.counts: dict[str, int] = {}
        self.on_give_up = on_give_up  # a sink gave up on a delivery (metrics)
        self.on_event = on_event  # every event emitted (metrics)
        self._taken: dict[str, Any] | None = None  # the state file's next snapshot, written once delivered
        self._dirty = False
        self._closing = False
        self._last_write = -float("inf")
        if state_path is not None:
            self._load(state_path)

    # -- the Stage protocol -----------------------------------------------------------------------------------
    def on_scored(self, scored: list[Scored]) -> list[Outgoing]:
        now = self.clock()
        out: list[Outgoing] = []
        if self._restored_at:
            for sc in scored:
                self._restored_at.pop(sc.window.sensor, None)
        for sc in scored:
            w = sc.window
            if sc.partition is not None:
                self._parts[w.sensor] = sc.partition
            q = self.silence.seen(w.sensor, w.end_ms, now, sc.replay)
            if q is not None and not sc.replay:
                out += self._emit(quality_event(q, self.router.sensor_tags(w.sensor)))
                self._changed.add(w.sensor)
            # as the anomaly event of the window has it: a severity band the same as its severity, at 0 too
            ratio = ratio_of(sc.score, sc.threshold) if sc.alarm else 0.0
            chans = top_channels(self.channels, sc.shares) if sc.alarm else None
            t = self.tracker.observe(w.sensor, w.start_ms, w.end_ms, ratio, sc.alarm, chans)
            if sc.replay:
                continue
            if sc.alarm or self.tracker.open_episode(w.sensor) is not None:
                # an episode's progress between its events (windows in alarm, peak, quiet windows towards the
                # resolve) and alarms a cooldown suppressed: the partition's next owner goes on from here, not
                # from the last event, whatever its lookback replays
                self._changed.add(w.sensor)
            if t is None:
                continue
            event = episode_event(
                t, window_start_ms=w.start_ms, window_end_ms=w.end_ms, score=sc.score, threshold=sc.threshold,
                severity=t.episode.severity, model_version=sc.model_version,
                channels=chans if chans is not None else t.episode.peak_channels,
                tags=self.router.sensor_tags(w.sensor))
            out += self._emit(event)
            self._changed.add(w.sensor)
        self._dirty = True
        return out

    def on_calibration(self, sensor: str, end_ms: int, baseline: Any) -> list[Outgoing]:
        """A data-quality event: ``calibration_started`` (the sensor emits no anomaly events until it ends) or
        ``calibration_finished`` (with its threshold)."""
        doc = calibration_event(sensor, end_ms, None if baseline is None else baseline.threshold,
                                None if baseline is None else baseline.n_readings, self.router.sensor_tags(sensor))
        return self._emit(doc)

    def on_tick(self, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        for q in self.silence.check(now):
            out += self._emit(quality_event(q, self.router.sensor_tags(q.sensor)))
            self._changed.add(q.sensor)
            self._dirty = True
        for hook in self.webhooks.values():
            out += [self._dead_letter(d) for d in hook.take_dead_letters()]
        if self._restored_at and now - self._last_evict >= min(self.sensor_ttl_s, 60.0):
            self._last_evict = now
            idle = [s for s, at in self._restored_at.items() if now - at >= self.sensor_ttl_s]
            if idle:
                self.evict(idle)
        return out

    def on_late(self, reports: list[LateReport]) -> list[Outgoing]:
        out: list[Outgoing] = []
        for r in reports:
            out += self._emit(late_event(r, self.router.sensor_tags(r.sensor)))
        return out

    # -- the rest ---------------------------------------------------------------------------------------------
    @property
    def pending_deliveries(self) -> int:
        """Webhook deliveries queued or in flight."""
        return sum(h.pending for h in self.webhooks.values())

    def forget(self, sensors: Iterable[str]) -> None:
        """Drop the state of sensors this worker no longer owns (their partitions moved)."""
        sensors = list(sensors)
        self.tracker.forget(sensors)
        self.silence.forget(sensors)
        self.router.forget(sensors)
        for s in sensors:
            self._parts.pop(s, None)
            self._restored_at.pop(s, None)
            self._changed.discard(s)  # not ours to write: the partition's next owner replays what we did not commit

    def topics(self) -> tuple[str, ...]:
        used = set(self.router.default_sinks).union(*(r.sinks for r in self.router.routes))
        out = [s.topic for n, s in self.sinks.items() if n in used and isinstance(s, TopicSpec)]
        return (*out, self.dead_letter_topic) if self.webhooks else tuple(out)

    def on_revoked(self, parts: list[Partition]) -> None:
        """Forget every sensor of ``parts``, those restored with them that sent no window since included: their
        silence must not be reported, nor their state written, by a worker that no longer owns them."""
        moved = set(parts)
        self.forget([s for s, p in self._parts.items() if p in moved])

    def evict(self, sensors: Iterable[str]) -> None:
        """Sensors idle past ``stream.sensor_ttl_s``: forget those at rest (no open episode, no cooldown running,
        not reported silent); the others keep their state until they come back."""
        sensors = list(sensors)
        self.tracker.evict(sensors)
        self.silence.evict(sensors)
        self.router.forget(sensors)
        for s in sensors:
            self._restored_at.pop(s, None)  # kept (not at rest) until it comes back, as a live sensor is
            if s not in self.tracker and self.silence.sensor_state(s) is None:
                self._parts.pop(s, None)

    def close(self, timeout_s: float = 5.0) -> list[Outgoing]:
        """Stop the webhook threads; returns the dead letters not yet handed to the worker. The state file gets
        the last snapshot from the worker's last commit (none after a failed delivery)."""
        self._closing = True
        out: list[Outgoing] = []
        for hook in self.webhooks.values():
            hook.close(timeout_s)
            out += [self._dead_letter(d) for d in hook.take_dead_letters()]
        return out

    def on_assigned(self, parts: list[tuple[str, int]]) -> None:
        """Restore the episodes, cooldowns and silence of the sensors of ``parts`` from the changelog, each with
        its partition: where its next change (a silence found before any window of it comes) must be written."""
        if self.changelog is None:
            return
        now = self.clock()
        for part, values in self.changelog.restore(parts).items():
            for sensor, value in values.items():
                try:
                    self._restore_sensor(sensor, json.loads(value), part, now)
                except (ValueError, TypeError, KeyError, AttributeError) as e:  # a record this version cannot read
                    self.forget([sensor])
                    log.warning("alert state of sensor %r in the changelog (partition %s) is unreadable (%s: %s): "
                                "it starts again from the replayed lookback, and its next change overwrites the "
                                "record", sensor, part, type(e).__name__, e)
                    continue
                self._restored_at[sensor] = now
        log.info("alert state of %s restored: %d open episode(s)", parts, len(self.tracker.open_episodes()))

    def _restore_sensor(self, sensor: str, doc: dict[str, Any], part: Partition, now: float) -> None:
        self._parts[sensor] = part
        if doc.get("episode") is not None:
            self.tracker.restore_sensors({sensor: doc["episode"]})
        if doc.get("silence") is not None:
            self.silence.restore_sensor(sensor, doc["silence"], now)

    def state(self) -> list[tuple[Partition, Outgoing]]:
        """Each sensor's state changed since the last call, for the changelog. The worker asks once the events
        of those changes are flushed (a state delivered ahead of its events would, after a crash, keep the replayed
        windows from emitting them again: lost), and flushes these before it commits the offsets they reflect (a
        worker that dies before the commit replays those records, and emits their events again, same ids)."""
        if self.changelog is None or not self._changed:
            self._changed.clear()  # without a changelog: the state file has it all
            if self.state_path is not None and self._dirty and (
                    self._closing or self.clock() - self._last_write >= self.persist_interval_s):
                self._taken, self._dirty = self._snapshot(), False
            return []
        out = []
        for sensor in sorted(self._changed):
            part = self._parts.get(sensor)
            if part is not None:
                doc = {"episode": self.tracker.snapshot([sensor]).get(sensor),
                       "silence": self.silence.sensor_state(sensor)}
                out.append((part, self.changelog.record(part, sensor, json.dumps(doc, separators=(",", ":")).encode())))
        self._changed.clear()
        return out

    def delivered(self) -> None:
        """The events returned until the last :meth:`state` call are delivered: write the state file's snapshot
        taken then."""
        if self._taken is not None and self.state_path is not None:
            write_state(self.state_path, self._taken)
            self._taken, self._last_write = None, self.clock()

    def _emit(self, event: dict[str, Any]) -> list[Outgoing]:
        kind = event["type"]
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.on_event is not None:
            self.on_event(event)
        value, key = encode_event(event), event["sensor"].encode()
        out = []
        for name in self.router.sinks_for(event):
            spec = self.sinks[name]
            self.counts[f"sink.{name}"] = self.counts.get(f"sink.{name}", 0) + 1
            if isinstance(spec, TopicSpec):
                out.append(Outgoing(spec.topic, value, key, [("aestream.alert.type", kind.encode())]))
            elif isinstance(spec, WebhookSpec):
                self.webhooks[name].submit(value, key, event["event_id"])
            elif isinstance(spec, LogSpec):
                log_event(spec, event)
        return out

    def _dead_letter(self, d: DeadLetter) -> Outgoing:
        self.counts["dead_letters"] = self.counts.get("dead_letters", 0) + 1
        if self.on_give_up is not None:
            self.on_give_up(d.sink)
        headers = [("aestream.reason", d.reason.encode()), ("aestream.sink", d.sink.encode()),
                   ("aestream.attempts", str(d.attempts).encode()), ("aestream.event_id", d.event_id.encode())]
        return Outgoing(self.dead_letter_topic, d.value, d.key, headers)

    def _snapshot(self) -> dict[str, Any]:
        return {"episodes": self.tracker.snapshot(), "silence": self.silence.snapshot()}

    def _load(self, path: Path) -> None:
        data = read_state(path)
        if data is None:
            return
        try:
            self.tracker.restore(data["episodes"])
            self.silence.restore(data["silence"], self.clock())
        except (KeyError, TypeError, ValueError) as e:
            raise AlertStateError(f"alert state file {path} is malformed ({type(e).__name__}: {e}): move it away "
                                  "to start with no open episodes") from None
        log.info("alert state restored from %s: %d open episode(s)", path, len(self.tracker.open_episodes()))


def build_alert_stage(cfg: Config, *, clock: Callable[[], float] = time.monotonic, post: Post = post_json,
                      on_give_up: Callable[[str], None] | None = None,
                      on_event: Callable[[dict[str, Any]], None] | None = None,
                      changelog: Changelog | None = None) -> AlertStage | None:
    """The alert stage ``cfg.alerts`` describes, or ``None`` when ``alerts.enabled`` is false."""
    a = cfg.alerts
    # at start-up, also when alerts are off: a wrong table fails before use
    check_alerts(a, cfg.stream.channels, cfg.kafka.input_topics)
    if not a.enabled:
        return None
    sinks, bands = parse_sinks(a.sinks, a.topic), parse_bands(a.bands)
    return AlertStage(
        channels=tuple(cfg.stream.channels), bands=bands,
        router=Router(parse_routes(a.routes, sinks, bands), a.match, a.default_sinks, a.tags), sinks=sinks,
        dead_letter_topic=a.dead_letter_topic or cfg.kafka.dead_letter_topic,
        n_resolve_windows=a.n_resolve_windows, cooldown_ms=a.cooldown_ms, silent_after_s=a.silent_after_s,
        silent_lag_ms=a.silent_lag_ms, sensor_ttl_s=cfg.stream.sensor_ttl_s,
        state_path=Path(cfg.paths.state_dir) / a.state_file, persist_interval_s=a.persist_interval_s, clock=clock,
        post=post, on_give_up=on_give_up, on_event=on_event, changelog=changelog)
