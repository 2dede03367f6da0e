"""SilenceWatch on its own: the fields of its reports, its bounds, and what replayed, redelivered and restored
windows do to it."""

from __future__ import annotations

from aestream.alerts.silence import Quality, SilenceWatch


def test_a_silence_and_its_end_say_when_the_sensor_went_quiet_and_for_how_long() -> None:
    w = SilenceWatch(silent_after_s=10.0)
    assert w.seen("s", 1_000, now=0.0) is None
    assert w.check(now=12.5) == [Quality("sensor_silent", "s", 1_000, 12.5, "processing_time")]
    assert w.seen("s", 9_000, now=20.0) == Quality("sensor_resumed", "s", 1_000, 7.5, "processing_time", 9_000)


def test_a_sensor_is_silent_only_once_more_than_silent_after_s_has_passed() -> None:
    w = SilenceWatch(silent_after_s=10.0)
    w.seen("s", 1_000, now=0.0)
    assert w.check(now=10.0) == []
    assert [q.kind for q in w.check(now=10.5)] == ["sensor_silent"]


def test_a_redelivered_or_older_window_of_a_silent_sensor_does_not_resume_it() -> None:
    w = SilenceWatch(silent_after_s=10.0)
    w.seen("s", 5_000, now=0.0)
    assert [q.kind for q in w.check(now=11.0)] == ["sensor_silent"]
    assert w.seen("s", 5_000, now=12.0) is None  # the same window again
    assert w.seen("s", 4_000, now=13.0, replay=True) is None  # an older one
    assert w.sensor_state("s") == {"end_ms": 5_000, "silent": True}
    assert w.check(now=30.0) == []  # still silent: not reported twice
    assert w.seen("s", 6_000, now=31.0) == Quality("sensor_resumed", "s", 5_000, 20.0, "processing_time", 6_000)


def test_a_silence_reported_during_a_replay_ends_at_the_sensor_s_first_live_window() -> None:
    w = SilenceWatch(silent_lag_ms=60_000)
    w.seen("y", 1_000_000, now=0.0)  # another partition, live
    w.seen("z", 500_000, now=0.0, replay=True)  # this one's lookback, 500 s behind
    assert [q.kind for q in w.check(now=0.0)] == ["sensor_silent"]
    assert w.seen("z", 990_000, now=1.0, replay=True) is None, "the replay catches up: z is not back yet"
    assert w.sensor_state("z") == {"end_ms": 500_000, "silent": True} and w.check(now=1.0) == []
    assert w.seen("z", 1_004_000, now=2.0) == Quality("sensor_resumed", "z", 500_000, 2.0, "processing_time",
                                                      1_004_000)


def test_replayed_windows_raise_the_fleets_event_time_too() -> None:
    w = SilenceWatch(silent_lag_ms=10_000)
    w.seen("b", 1_000, now=0.0)
    w.seen("a", 50_000, now=0.0, replay=True)
    assert w.check(now=0.0) == [Quality("sensor_silent", "b", 1_000, 0.0, "event_time")]


def test_a_restored_sensors_grace_starts_at_the_first_live_window_not_at_replayed_ones() -> None:
    w = SilenceWatch(silent_lag_ms=400)
    w.restore_sensor("x", {"end_ms": 0, "silent": False}, now=0.0)
    w.seen("y", 100_000, now=0.0, replay=True)
    assert w.check(now=0.0) == []  # no live window yet: x is not judged
    w.seen("y", 100_500, now=1.0)
    assert w.check(now=1.0) == []  # the grace starts here, at 100 500
    w.seen("y", 100_900, now=2.0)
    assert w.check(now=2.0) == []  # 400 ms of live event time: not more than silent_lag_ms
    w.seen("y", 100_901, now=3.0)
    assert w.check(now=3.0) == [Quality("sensor_silent", "x", 0, 3.0, "event_time")]


def test_a_restored_sensor_whose_end_is_newer_than_the_live_event_time_lags_from_its_end() -> None:
    w = SilenceWatch(silent_lag_ms=60_000)
    w.restore_sensor("x", {"end_ms": 500_000, "silent": False}, now=0.0)
    w.seen("y", 450_000, now=0.0)
    assert w.check(now=0.0) == []
    w.seen("y", 520_000, now=1.0)
    assert w.check(now=1.0) == []  # 70 s after the grace began, but only 20 s after x's own end
    w.seen("y", 560_001, now=2.0)
    assert [(q.sensor, q.detected_by) for q in w.check(now=2.0)] == [("x", "event_time")]


def test_a_restored_sensor_is_judged_against_the_fleet_once_its_own_window_came_back() -> None:
    w = SilenceWatch(silent_lag_ms=60_000)
    w.restore_sensor("x", {"end_ms": 0, "silent": False}, now=0.0)
    w.seen("y", 200_000, now=0.0, replay=True)
    w.seen("x", 10_000, now=0.0, replay=True)
    assert w.check(now=0.0) == [Quality("sensor_silent", "x", 10_000, 0.0, "event_time")]


def test_a_state_file_snapshot_restores_the_watermark_and_a_reported_silence() -> None:
    w = SilenceWatch(silent_after_s=10.0, silent_lag_ms=60_000)
    w.seen("a", 90_000, now=0.0)
    w.seen("s", 80_000, now=0.0)
    w.seen("a", 95_000, now=11.0)
    assert [q.sensor for q in w.check(now=11.0)] == ["s"]
    snap = w.snapshot()
    again = SilenceWatch(silent_after_s=10.0, silent_lag_ms=60_000)
    again.restore(snap, now=100.0)
    assert again.snapshot() == snap == {"watermark_ms": 95_000, "sensors": {
        "a": {"end_ms": 95_000, "silent": False}, "s": {"end_ms": 80_000, "silent": True}}}
    assert again.check(now=105.0) == []  # s was reported before the restart: not again
    assert again.seen("s", 96_000, now=106.0) == Quality("sensor_resumed", "s", 80_000, 6.0, "processing_time",
                                                         96_000)
