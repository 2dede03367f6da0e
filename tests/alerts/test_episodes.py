"""The per-sensor episode state machine."""

from __future__ import annotations

from aestream.alerts.episodes import EpisodeTracker, episode_id
from aestream.alerts.routing import parse_bands

BANDS = parse_bands({"warning": 1.0, "critical": 2.0, "emergency": 10.0})


def run(t: EpisodeTracker, ratios: list[float], sensor: str = "pump-1", first: int = 0) -> list[str | None]:
    out = []
    for i, r in enumerate(ratios, start=first):
        x = t.observe(sensor, i * 10, i * 10 + 5, r, r > 1.0)
        out.append(x.kind if x else None)
    return out


def test_a_sustained_anomaly_opens_once_updates_only_on_escalation_and_resolves_after_m_normal_windows() -> None:
    t = EpisodeTracker(BANDS, n_resolve_windows=3, cooldown_ms=0)
    ratios = [0.5, 1.5, 1.2, 2.5, 1.5, 3.0, 12.0, 2.0, 0.5, 0.5, 3.0, 0.5, 0.5, 0.5, 0.5]
    kinds = run(t, ratios)
    assert [k for k in kinds if k] == ["opened", "updated", "updated", "resolved"]
    assert kinds.index("opened") == 1 and kinds.index("resolved") == 13


def test_the_resolved_episode_reports_its_peak_end_and_windows() -> None:
    t = EpisodeTracker(BANDS, n_resolve_windows=2)
    transitions = [t.observe("s", i, i + 5, r, r > 1) for i, r in enumerate([1.5, 4.0, 1.1, 0.2, 0.2])]
    resolved = transitions[-1]
    assert resolved is not None and resolved.kind == "resolved"
    ep = resolved.episode
    assert (ep.opened_ms, ep.last_alarm_ms, ep.resolved_ms, ep.peak_ratio, ep.severity, ep.n_windows) == (
        5, 7, 9, 4.0, "critical", 3)
    assert ep.episode_id == episode_id("s", 5) == transitions[0].episode.episode_id  # type: ignore[union-attr]
    assert t.open_episode("s") is None


def test_an_alarm_inside_the_cooldown_opens_nothing_and_one_after_it_opens_a_new_episode() -> None:
    t = EpisodeTracker(BANDS, n_resolve_windows=2, cooldown_ms=100)  # windows end every 10 ms
    kinds = run(t, [1.5, 0.5, 0.5])  # resolved at end 25: cooldown until 125
    kinds += run(t, [1.5, 0.5, 1.5, 0.5, 0.5, 1.5, 0.5, 0.5, 1.5], first=3)  # flapping, ends 35 … 115
    assert [k for k in kinds if k] == ["opened", "resolved"]
    assert t.n_suppressed("pump-1") == 4
    assert run(t, [1.5], first=12) == ["opened"]  # ends at 125: the cooldown is over


def test_flapping_shorter_than_the_resolve_run_stays_one_episode() -> None:
    t = EpisodeTracker(BANDS, n_resolve_windows=3)
    kinds = run(t, [1.5, 0.5, 0.5, 1.5, 0.5, 1.5, 0.5, 0.5, 1.5, 0.5, 0.5, 0.5])
    assert [k for k in kinds if k] == ["opened", "resolved"]


def test_a_window_seen_again_changes_nothing() -> None:
    t = EpisodeTracker(BANDS, n_resolve_windows=1)
    assert t.observe("s", 0, 10, 1.5, True) is not None
    assert t.observe("s", 0, 10, 0.2, False) is None  # a redelivery of the same window
    assert t.observe("s", 0, 5, 0.2, False) is None  # an older one
    assert t.open_episode("s") is not None


def test_an_alarm_below_every_band_floor_gets_the_lowest_band() -> None:
    t = EpisodeTracker(BANDS)
    x = t.observe("s", 0, 10, 0.8, True)  # the k-of-n rule can hold the alarm while one window dips below
    assert x is not None and x.episode.severity == "warning"


def test_restored_state_continues_the_open_episode_without_opening_it_again() -> None:
    t = EpisodeTracker(BANDS, n_resolve_windows=2, cooldown_ms=50)
    run(t, [1.5, 2.5, 1.5])
    again = EpisodeTracker(BANDS, n_resolve_windows=2, cooldown_ms=50)
    again.restore(t.snapshot())
    assert run(again, [1.5, 1.5], first=0) == [None, None]  # replayed windows: deduplicated
    assert run(again, [1.6, 0.5, 0.5], first=3) == [None, None, "resolved"]
    ep = again.open_episode("pump-1")
    assert ep is None
    assert again.snapshot() != t.snapshot()
    assert again.snapshot()["pump-1"]["cooldown_until_ms"] == 55 + 50


def test_a_restored_cooldown_goes_on_suppressing_and_counting() -> None:
    t = EpisodeTracker(BANDS, n_resolve_windows=2, cooldown_ms=100)
    run(t, [1.5, 0.5, 0.5, 1.5])  # resolved at end 25: cooldown until 125; the alarm ending at 35 suppressed
    again = EpisodeTracker(BANDS, n_resolve_windows=2, cooldown_ms=100)
    again.restore_sensors(t.snapshot())
    assert run(again, [1.5, 1.5], first=4) == [None, None]  # ends 45 and 55: still in the cooldown
    assert again.n_suppressed("pump-1") == 3
    assert run(again, [1.5], first=12) == ["opened"]  # ends at 125: the cooldown is over
