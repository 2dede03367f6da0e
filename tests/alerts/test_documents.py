"""Alert event documents: every field, and ids that depend only on (episode or sensor, type, window end)."""

from __future__ import annotations

from aestream.alerts.documents import alert_event_id, calibration_event, episode_event, quality_event
from aestream.alerts.episodes import Episode, Transition
from aestream.alerts.silence import Quality

T0 = 1_767_225_600_000


def _episode(episode_id: str = "ep-1") -> Episode:
    return Episode(episode_id, "pump-7", T0 - 10_000, T0, "critical", 2.345678, T0, [("vibration", 0.6)],
                   T0 + 4_000, n_windows=3, n_updates=1)


def test_an_episode_event_carries_the_window_the_episode_and_the_sensors_tags() -> None:
    e = episode_event(Transition("updated", _episode()), window_start_ms=T0 - 11_000, window_end_ms=T0 + 4_000,
                      score=0.9, threshold=0.3, severity="critical", model_version="v0003",
                      channels=[("vibration", 0.6)], tags=("rotating",))
    assert e == {
        "schema": "aestream.alert/1", "type": "updated", "category": "anomaly",
        "event_id": "9316daa5-81f1-5860-ac33-65d30ea5d067", "episode_id": "ep-1", "sensor": "pump-7",
        "severity": "critical", "window_start_ms": T0 - 11_000, "window_end_ms": T0 + 4_000,
        "window_end": "2026-01-01T00:00:04.000Z", "score": 0.9, "threshold": 0.3, "ratio": 3.0,
        "model_version": "v0003", "channels": [{"name": "vibration", "share": 0.6}], "tags": ["rotating"],
        "episode": {"started_ms": T0 - 10_000, "opened_ms": T0, "opened": "2026-01-01T00:00:00.000Z",
                    "last_alarm_ms": T0 + 4_000, "resolved_ms": None, "severity": "critical", "peak_ratio": 2.3457,
                    "n_windows": 3, "n_updates": 1}}


def test_episode_event_ids_differ_by_episode_and_by_type_at_the_same_window() -> None:
    def event_id(episode_id: str, kind: str) -> str:
        return episode_event(Transition(kind, _episode(episode_id)), window_start_ms=T0, window_end_ms=T0 + 4_000,
                             score=0.9, threshold=0.3, severity="critical", model_version="v0003",
                             channels=[])["event_id"]

    assert event_id("ep-1", "updated") == alert_event_id("ep-1", "updated", T0 + 4_000)
    ids = {event_id("ep-1", "updated"), event_id("ep-2", "updated"), event_id("ep-1", "resolved")}
    assert len(ids) == 3  # two episodes of one sensor, or two transitions at one window: never one id


def test_a_resumed_event_has_the_id_of_the_window_it_resumed_on_and_its_silence_to_the_millisecond() -> None:
    e = quality_event(Quality("sensor_resumed", "pump-7", T0, 7.25, "processing_time", T0 + 60_000), ("rotating",))
    assert e == {
        "schema": "aestream.alert/1", "type": "sensor_resumed", "category": "data_quality",
        "event_id": "6a0919b4-d780-5f40-8f8d-f0dd739962f0", "sensor": "pump-7", "severity": "info",
        "last_window_end_ms": T0, "last_window_end": "2026-01-01T00:00:00.000Z", "resumed_window_end_ms": T0 + 60_000,
        "silent_for_s": 7.25, "detected_by": "processing_time", "tags": ["rotating"]}
    assert e["event_id"] == alert_event_id("pump-7", "sensor_resumed", T0 + 60_000)


def test_a_baseline_calibrated_to_a_zero_threshold_is_finished() -> None:
    e = calibration_event("pump-7", T0, 0.0, 400)
    assert (e["type"], e["threshold"], e["n_readings"]) == ("calibration_finished", 0.0, 400)
    assert calibration_event("pump-7", T0, None, None)["type"] == "calibration_started"
