"""The alert stage: episodes and silence → routed documents that validate against the schema; replay; restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aestream.alerts import AlertStage, build_alert_stage
from aestream.alerts.sinks import Delivery
from aestream.config import Config
from aestream.errors import AlertStateError
from aestream.stream.lateness import LateReport

from .helpers import MemoryChangelog, decode, scored, validator

PART = ("readings", 0)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def config(tmp_path: Path, **alerts: Any) -> Config:
    base = {"enabled": True, "n_resolve_windows": 3, "cooldown_ms": 60_000,
            "sinks": {"a": {"type": "topic", "topic": "topic-a"}, "b": {"type": "topic", "topic": "topic-b"}},
            "routes": ({"severity": "critical", "sensor": "pump-*", "sinks": ["a"]},
                       {"severity": "warning", "sinks": ["b"]}),
            "persist_interval_s": 0.0}
    return Config().replace(alerts={**base, **alerts}, paths={"state_dir": str(tmp_path)},
                            kafka={"dead_letter_topic": "dlq"},
                            stream={"channels": ("temperature", "pressure", "vibration", "current")})


def stage(cfg: Config, clock: Clock | None = None, **kw: Any) -> AlertStage:
    s = build_alert_stage(cfg, clock=clock or Clock(), **kw)
    assert s is not None
    return s


def step(s: AlertStage, windows: list[Any], now: float = 0.0) -> list[Any]:
    return s.on_scored(windows) + s.on_tick(now)


def test_disabled_alerts_build_no_stage() -> None:
    assert build_alert_stage(Config()) is None


def test_calibration_start_and_end_are_data_quality_events_that_validate(tmp_path: Path) -> None:
    from aestream.detect.baselines import Baseline

    s = stage(config(tmp_path))
    baseline = Baseline(np.zeros(4), np.ones(4), np.ones(4), 2.5, "v0001", 400)
    out = s.on_calibration("pump-1", 1_000, None) + s.on_calibration("pump-1", 400_000, baseline)
    docs = decode(out)
    assert [(d["type"], d["category"], d["threshold"], d["n_readings"]) for d in docs] == [
        ("calibration_started", "data_quality", None, None), ("calibration_finished", "data_quality", 2.5, 400)]
    v = validator("alert-event.v1.json")
    for d in docs:
        v.validate(d)


def test_episode_events_are_routed_by_severity_and_sensor_and_validate(tmp_path: Path) -> None:
    s = stage(config(tmp_path))
    out = step(s, [scored("pump-1", i, r) for i, r in enumerate([0.5, 2.5, 3.0, 0.4, 0.4, 0.4])])
    out += step(s, [scored("fan-1", i, r) for i, r in enumerate([1.5, 2.5, 0.4, 0.4, 0.4])])
    routed = [(m.topic, json.loads(m.value)["type"], m.key) for m in out]
    assert routed == [("topic-a", "opened", b"pump-1"), ("topic-a", "resolved", b"pump-1"),
                      ("topic-b", "opened", b"fan-1"), ("alerts", "updated", b"fan-1"),  # critical fan: default
                      ("alerts", "resolved", b"fan-1")]
    v = validator("alert-event.v1.json")
    for e in decode(out):
        v.validate(e)
    opened = decode(out)[0]
    assert opened["channels"][0] == {"name": "vibration", "share": 0.6}
    assert (opened["window_end_ms"], opened["severity"], opened["ratio"], opened["model_version"]) == (
        1_767_225_604_000, "critical", 2.5, "v0001")
    resolved = decode(out)[1]
    assert resolved["episode_id"] == opened["episode_id"] and resolved["episode"]["last_alarm_ms"] == 1_767_225_608_000
    assert resolved["event_id"] != opened["event_id"]


def test_an_episode_s_band_is_the_severity_of_its_window_s_anomaly_event_also_at_a_zero_threshold(
        tmp_path: Path) -> None:
    import dataclasses

    from aestream.stream.events import anomaly_event

    s = stage(config(tmp_path))
    # a baseline calibrated on flat readings (its threshold 0); and a ratio numpy rounds to 2.0 (critical_ratio)
    windows = [dataclasses.replace(scored("pump-1", 1, 1.0, alarm=True, threshold=0.0), score=5.0),
               dataclasses.replace(scored("pump-2", 1, 1.0, alarm=True, threshold=1.0), score=1.99995)]
    out = step(s, windows)
    assert [m.topic for m in out] == ["topic-a", "topic-a"], "the route of critical pumps"
    docs = decode(out)
    for sc, doc in zip(windows, docs):
        w = sc.window
        event = anomaly_event(sensor=w.sensor, window_start_ms=w.start_ms, window_end_ms=w.end_ms, score=sc.score,
                              threshold=sc.threshold, critical_ratio=2.0, channels=tuple(s.channels), shares=sc.shares,
                              model_version="v0001", model_family="vanilla", source=("readings", 0, 1))
        assert (doc["type"], doc["severity"], doc["ratio"]) == ("opened", event["severity"], event["ratio"]), doc
    assert [(d["sensor"], d["severity"]) for d in docs] == [("pump-1", "critical"), ("pump-2", "critical")]


def test_replayed_windows_rebuild_state_but_emit_nothing(tmp_path: Path) -> None:
    s = stage(config(tmp_path, state_file="none.json"))
    assert step(s, [scored("pump-1", i, 2.5, replay=True) for i in range(3)]) == []
    assert step(s, [scored("pump-1", i, 2.5) for i in range(3, 5)]) == []  # already open: no second opened
    assert [json.loads(m.value)["type"] for m in step(s, [scored("pump-1", i, 0.1) for i in range(5, 8)])] == [
        "resolved"]


def test_a_restarted_stage_continues_the_episode_from_the_state_file(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    first = stage(cfg)
    assert len(step(first, [scored("pump-1", i, 2.5) for i in range(3)])) == 1
    first.state()  # the worker's commit: the state asked, then its events delivered
    first.delivered()
    assert (tmp_path / "alerts-state.json").exists()

    second = stage(cfg)
    out = step(second, [scored("pump-1", i, r) for i, r in enumerate([2.5, 2.5, 2.5, 0.1, 0.1, 0.1])])
    assert [json.loads(m.value)["type"] for m in out] == ["resolved"]


def test_the_state_file_gets_the_state_asked_for_once_the_worker_reports_its_events_delivered(tmp_path: Path) -> None:
    s = stage(config(tmp_path))
    step(s, [scored("pump-1", 0, 2.5)])
    assert s.state() == []  # no changelog: the snapshot waits for the delivery of the opened event
    step(s, [scored("pump-1", 1, 2.5)])
    assert not (tmp_path / "alerts-state.json").exists()  # not delivered yet: a crash now must re-emit
    s.delivered()
    assert json.loads((tmp_path / "alerts-state.json").read_text())["episodes"]["pump-1"]["last_end_ms"] == (
        1_767_225_600_000)


def test_an_unreadable_state_file_stops_the_start_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "alerts-state.json").write_text("{not json")
    with pytest.raises(AlertStateError) as e:
        stage(config(tmp_path))
    assert f"alert state file {tmp_path / 'alerts-state.json'} is unreadable" in str(e.value)
    assert "move it away to start with no open episodes" in str(e.value)


def test_a_silent_sensor_is_reported_once_and_again_when_it_resumes(tmp_path: Path) -> None:
    clock = Clock()
    s = stage(config(tmp_path, silent_after_s=30.0), clock)
    step(s, [scored("pump-1", 0, 0.1), scored("pump-2", 0, 0.1)])
    clock.t = 20.0
    assert step(s, [scored("pump-2", 1, 0.1)], now=20.0) == []
    silent = decode(s.on_tick(31.0))
    assert [(e["type"], e["sensor"], e["detected_by"]) for e in silent] == [
        ("sensor_silent", "pump-1", "processing_time")]
    assert s.on_tick(40.0) == []
    clock.t = 55.0
    resumed = decode(step(s, [scored("pump-1", 20, 0.1)], now=55.0))
    silent2 = [e for e in resumed if e["sensor"] == "pump-2"]
    assert [e["type"] for e in resumed if e["sensor"] == "pump-1"] == ["sensor_resumed"]
    assert [e["type"] for e in silent2] == ["sensor_silent"]  # pump-2: nothing since t = 20
    v = validator("alert-event.v1.json")
    for e in silent + resumed:
        v.validate(e)
        assert e["category"] == "data_quality" and e["severity"] == "info"


def test_a_sensor_lagging_the_fleet_in_event_time_is_silent(tmp_path: Path) -> None:
    s = stage(config(tmp_path, silent_lag_ms=20_000))
    out = decode(step(s, [scored("pump-1", 0, 0.1)] + [scored("pump-2", i, 0.1) for i in range(8)]))
    assert [(e["type"], e["sensor"], e["detected_by"]) for e in out] == [("sensor_silent", "pump-1", "event_time")]


def streamed(s: AlertStage, sensors: tuple[str, ...], windows: range, replay: bool = False,
             now: float = 0.0) -> list[Any]:
    """One step of windows ``windows`` of each of ``sensors``, all at ratio 0.1, read from ``PART``."""
    return step(s, [scored(x, i, 0.1, replay=replay, partition=PART) for i in windows for x in sensors], now)


def test_a_restored_sensor_is_not_silent_before_its_own_windows_come_back(tmp_path: Path) -> None:
    cfg = config(tmp_path, silent_lag_ms=60_000, n_resolve_windows=1, cooldown_ms=0)
    log = MemoryChangelog()
    first = stage(cfg, changelog=log)
    step(first, [scored("pump-1", 0, 2.5, partition=PART), scored("pump-1", 1, 0.1, partition=PART)])
    first.state()  # pump-1's state reaches the changelog with its episode: its window end stays that old
    streamed(first, ("pump-1", "pump-2"), range(2, 900))
    step(first, [scored("pump-2", 900, 2.5, partition=PART)])
    first.state()  # pump-2's, an hour of event time later

    second = stage(cfg, changelog=log)
    second.on_assigned([PART])
    assert second.on_tick(0.0) == [], "no window of the partition yet: pump-1 is not an hour behind pump-2"
    assert streamed(second, ("pump-1", "pump-2"), range(890, 901), replay=True) == []
    live = decode(streamed(second, ("pump-1", "pump-2"), range(901, 930), now=1.0))
    assert [(e["type"], e["sensor"]) for e in live] == [("resolved", "pump-2")]  # and no sensor_silent


def test_a_restored_sensor_with_no_window_is_silent_after_the_lag_of_live_event_time(tmp_path: Path) -> None:
    cfg = config(tmp_path, silent_lag_ms=60_000)
    log = MemoryChangelog()
    step(first := stage(cfg, changelog=log), [scored("pump-1", 0, 2.5, partition=PART)])
    first.state()

    second = stage(cfg, changelog=log)
    second.on_assigned([PART])
    assert streamed(second, ("pump-2",), range(900, 901)) == []  # its grace starts at this live event time
    assert streamed(second, ("pump-2",), range(901, 916)) == []  # 60 s later: not more than silent_lag_ms
    out = decode(streamed(second, ("pump-2",), range(916, 917)))
    assert [(e["type"], e["sensor"], e["detected_by"], e["last_window_end_ms"]) for e in out] == [
        ("sensor_silent", "pump-1", "event_time", 1_767_225_600_000)]


def test_a_sensor_reported_silent_in_its_replay_is_reported_back_when_it_goes_on_live(tmp_path: Path) -> None:
    s = stage(config(tmp_path, silent_lag_ms=60_000))
    other = ("readings", 1)
    events = step(s, [scored("y", i, 0.5, partition=other) for i in range(240, 251)])  # live, 1,000 s in
    events += step(s, [scored("z", i, 0.5, replay=True, partition=PART) for i in range(125, 130)])  # 500 s behind
    events += step(s, [scored("z", i, 0.5, replay=True, partition=PART) for i in range(130, 251)])
    events += step(s, [scored("z", i, 0.5, partition=PART) for i in range(251, 255)])
    assert [(e["type"], e["sensor"]) for e in decode(events)] == [("sensor_silent", "z"), ("sensor_resumed", "z")]


def test_a_silence_found_after_a_restore_reaches_the_changelog_and_is_not_sent_again(tmp_path: Path) -> None:
    cfg = config(tmp_path, silent_after_s=60.0)
    log = MemoryChangelog()
    step(first := stage(cfg, changelog=log), [scored("pump-1", 0, 2.5, partition=PART)])
    first.state()

    clock = Clock()
    second = stage(cfg, clock, changelog=log)
    second.on_assigned([PART])
    assert [e["type"] for e in decode(second.on_tick(100.0))] == ["sensor_silent"]
    assert [part for part, _ in second.state()] == [PART]
    assert json.loads(log.log[(PART, "pump-1")])["silence"]["silent"] is True

    third = stage(cfg, Clock(), changelog=log)
    third.on_assigned([PART])
    assert third.on_tick(200.0) == [], "reported once, not after every restart"


def test_a_restored_sensor_whose_partition_moved_is_neither_reported_nor_written(tmp_path: Path) -> None:
    cfg = config(tmp_path, silent_after_s=60.0)
    log = MemoryChangelog()
    step(first := stage(cfg, changelog=log), [scored("pump-1", 0, 2.5, partition=PART)])
    first.state()
    second = stage(cfg, Clock(), changelog=log)
    second.on_assigned([PART])
    second.on_revoked([PART])  # before any window of pump-1 came
    assert second.on_tick(100.0) == [], "a silence reported by a worker that no longer owns the sensor"
    assert second.state() == []


def test_an_open_episode_s_progress_reaches_the_changelog_between_its_events(tmp_path: Path) -> None:
    cfg = config(tmp_path, n_resolve_windows=3)
    plan = [(0, 1.5), *[(i, 1.9) for i in range(1, 6)], (6, 0.4), (7, 0.4), (8, 0.4), (9, 0.4)]
    alone = stage(cfg, changelog=MemoryChangelog())
    whole = [e for i, r in plan for e in decode(step(alone, [scored("pump-1", i, r, partition=PART)]))]
    log = MemoryChangelog()
    first = stage(cfg, changelog=log)
    for i, r in plan[:8]:  # opened at 0, in alarm to 5, quiet at 6 and 7; each step committed
        step(first, [scored("pump-1", i, r, partition=PART)])
        first.state()
    # window 8 resolves the episode; the worker dies before its commit. The next owner's lookback holds only
    # window 7 of this sensor (a partition of many sensors), then window 8 comes again
    second = stage(cfg, changelog=log)
    second.on_assigned([PART])
    assert step(second, [scored("pump-1", 7, 0.4, replay=True, partition=PART)]) == []
    again = [e for i, r in plan[8:] for e in decode(step(second, [scored("pump-1", i, r, partition=PART)]))]
    assert [e["type"] for e in whole] == ["opened", "resolved"]
    assert again == whole[1:], "the same resolve: same window, id, window count and peak"


def test_webhook_give_ups_come_back_as_dead_letters_on_a_tick(tmp_path: Path) -> None:
    calls: list[bytes] = []

    def failing(spec: Any, body: bytes, headers: Any, stop: Any) -> Delivery:
        calls.append(body)
        return Delivery(500, 1 + spec.retries)

    cfg = config(tmp_path, sinks={"hook": {"type": "webhook", "url": "http://127.0.0.1:9/x", "retries": 1,
                                           "backoff_s": 0.0}},
                 routes=({"sinks": ["hook", "topic"]},))
    s = stage(cfg, post=failing)
    out = step(s, [scored("pump-1", 0, 2.5)])
    assert [m.topic for m in out] == ["alerts"]
    for _ in range(1000):
        if not s.pending_deliveries:
            break
        s.webhooks["hook"]._thread.join(0.01)
    (dead,) = s.on_tick(1.0)
    assert dead.topic == "dlq" and dead.value == out[0].value and dead.key == b"pump-1"
    assert dict(dead.headers)["aestream.reason"] == b"HTTP 500 after 2 attempt(s)"
    assert dict(dead.headers)["aestream.attempts"] == b"2" and len(calls) == 1
    assert s.close() == []


def test_a_sensor_dropping_many_late_readings_is_a_routed_data_quality_event(tmp_path: Path) -> None:
    cfg = config(tmp_path, routes=({"type": "sensor_late_readings", "sinks": ["a"]},))
    s = stage(cfg)
    (msg,) = s.on_late([LateReport("pump-1", 120, 60.0, 1_767_225_600_000)])
    event = json.loads(msg.value)
    assert (msg.topic, msg.key, event["type"], event["category"]) == ("topic-a", b"pump-1", "sensor_late_readings",
                                                                      "data_quality")
    assert (event["n_late"], event["period_s"], event["seen"]) == (120, 60.0, "2026-01-01T00:00:00.000Z")
    validator("alert-event.v1.json").validate(event)
    again = json.loads(s.on_late([LateReport("pump-1", 130, 60.0, 1_767_225_660_000)])[0].value)
    assert again["event_id"] != event["event_id"]


def test_idle_sensors_at_rest_are_forgotten_and_the_others_resolve_when_they_come_back(tmp_path: Path) -> None:
    clock = Clock()
    s = stage(config(tmp_path, silent_after_s=30.0, cooldown_ms=0), clock)
    step(s, [scored("open", 0, 2.5), scored("quiet", 0, 0.5), scored("silent", 0, 0.5)])
    clock.t = 31.0
    assert [e["type"] for e in decode(s.on_tick(clock.t))] == ["sensor_silent"] * 3
    step(s, [scored("open", 1, 2.5), scored("quiet", 1, 0.5)], now=clock.t)  # "silent" stays silent
    s.evict(["open", "quiet", "silent"])  # the worker forgot all three after stream.sensor_ttl_s
    assert s.tracker.snapshot().keys() == {"open"}, "an open episode stays, to be resolved"
    assert s.silence.snapshot()["sensors"].keys() == {"silent"}, "a silent sensor stays, to be reported resumed"
    clock.t = 40.0
    out = decode(step(s, [scored("open", i, 0.4) for i in range(2, 5)] + [scored("silent", 2, 0.5)], now=clock.t))
    assert [(e["type"], e["sensor"]) for e in out] == [("resolved", "open"), ("sensor_resumed", "silent")]


def test_sensors_restored_with_no_window_since_are_forgotten_after_the_ttl_as_idle_ones_are(tmp_path: Path) -> None:
    """The worker evicts the sensors its windows held; a sensor restored from the changelog that sends nothing
    never was in them, and each assignment restores every sensor the partition ever had an event of."""
    log = MemoryChangelog()
    first = stage(config(tmp_path, cooldown_ms=0), changelog=log)
    step(first, [scored(f"old-{k}", i, r, partition=PART) for k in range(3) for i, r in enumerate([2.5, 0.1, 0.1,
                                                                                                   0.1])])
    step(first, [scored("open", 0, 2.5, partition=PART)])
    first.state()
    clock = Clock()
    cfg = config(tmp_path, cooldown_ms=0).replace(stream={"sensor_ttl_s": 600.0})
    s = stage(cfg, clock, changelog=log)
    s.on_assigned([PART])
    assert len(s.tracker.snapshot()) == 4 and len(s.router._tag_cache) == 0
    clock.t = 300.0
    step(s, [scored("old-0", 4, 0.1, partition=PART)], now=clock.t)  # old-0 comes back: the worker's to evict
    clock.t = 599.0
    s.on_tick(clock.t)
    assert len(s.tracker.snapshot()) == 4
    clock.t = 660.0  # checked once a minute, as the worker's eviction is
    s.on_tick(clock.t)
    assert s.tracker.snapshot().keys() == {"old-0", "open"}, "at rest and idle: forgotten; an open episode stays"
    s.evict(["old-0"])  # the worker's eviction of what its windows held
    assert s.tracker.snapshot().keys() == {"open"} and set(s.router._tag_cache) <= {"open"}
    assert set(s._parts) == {"open"}


def test_an_unreadable_changelog_record_is_skipped_with_a_warning_and_the_others_are_restored(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = MemoryChangelog()
    first = stage(config(tmp_path), changelog=log)
    step(first, [scored(s, 0, 2.5, partition=PART) for s in ("a-ok", "b-bad", "c-ok")])
    first.state()
    doc = json.loads(log.log[(PART, "b-bad")])
    doc["episode"]["open"]["acknowledged_by"] = "ops"  # a field of a newer version, say
    log.log[(PART, "b-bad")] = json.dumps(doc).encode()
    s = stage(config(tmp_path), changelog=log)
    s.on_assigned([PART])
    assert sorted(e.sensor for e in s.tracker.open_episodes()) == ["a-ok", "c-ok"]
    assert "alert state of sensor 'b-bad' in the changelog (partition ('readings', 0)) is unreadable (TypeError" in (
        caplog.text)
    out = decode(step(s, [scored("b-bad", 1, 2.5, partition=PART)]))
    assert [e["type"] for e in out] == ["opened"], "it starts again: from the lookback, here a live window"
