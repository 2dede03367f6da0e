"""The reservoir (bounded, recency-weighted, persisted) and the stage's eligibility rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aestream.errors import ReservoirError
from aestream.retrain.reservoir import Reservoir
from aestream.retrain.stage import ReservoirStage
from aestream.stream.stages import Scored
from aestream.stream.windows import Window

W, C = 4, 2
SPAN_MS = (W - 1) * 1000


def _reservoir(capacity: int = 1000, half_life_s: float = 1e6, max_age_s: float = 1e9) -> Reservoir:
    return Reservoir(capacity, W, C, half_life_s=half_life_s, max_age_s=max_age_s, seed=0)


def _window(end_s: int, sensor: str = "s") -> Window:
    return Window(sensor, end_s * 1000 - SPAN_MS, end_s * 1000, np.full((W, C), end_s, dtype=np.float32))


def _scored(end_s: int, alarm: bool, sensor: str = "s", replay: bool = False) -> Scored:
    return Scored(_window(end_s, sensor), 2.0 if alarm else 0.5, 1.0, alarm, np.full(C, 0.5), "v0001", None, replay)


def test_capacity_is_a_bound_and_newer_windows_are_kept_more_often() -> None:
    r = _reservoir(capacity=100, half_life_s=50.0)
    for t in range(1000):
        r.add("s", t * 1000, np.zeros((W, C), np.float32))
    ends = r.snapshot().end_ms / 1000
    assert len(r) == 100 and r.n_added == 1000
    assert np.median(ends) > 900, "a 50 s half-life over 1000 s should keep mostly the last few hundred seconds"
    assert ends.min() < 900, "older windows keep a (small) chance: it is a sample, not a FIFO"


def test_expire_drops_windows_older_than_max_age_behind_the_newest() -> None:
    r = _reservoir(max_age_s=10.0)
    for t in (0, 5, 9, 15, 20):
        r.add("s", t * 1000, np.zeros((W, C), np.float32))
    assert r.expire() == 3
    assert r.snapshot().end_ms.tolist() == [15_000, 20_000]


def test_save_and_load_round_trip_keeps_windows_sensors_and_counts(tmp_path: Path) -> None:
    r = _reservoir()
    for t in range(5):
        r.add(f"s{t % 2}", t * 1000, np.full((W, C), t, np.float32))
    path = r.save(tmp_path / "reservoir.npz")
    again = _reservoir()
    assert again.load(path)
    a, b = r.snapshot(), again.snapshot()
    np.testing.assert_array_equal(a.windows, b.windows)
    assert a.sensors == b.sensors and again.n_added == 5
    assert (tmp_path / "reservoir.json").read_text().count('"n_windows": 5') == 1
    assert not list(tmp_path.glob(".reservoir*")), "no temporary file is left behind"


def test_a_reservoir_of_another_window_shape_starts_empty_and_a_corrupt_one_says_what_to_do(
        tmp_path: Path) -> None:
    r = _reservoir()
    r.add("s", 0, np.zeros((W, C), np.float32))
    path = r.save(tmp_path / "reservoir.npz")
    other = Reservoir(10, W + 1, C, half_life_s=1.0, max_age_s=1.0)
    assert not other.load(path) and len(other) == 0
    path.write_bytes(b"not an npz")
    with pytest.raises(ReservoirError, match=r"reservoir.npz is unreadable .*delete it to start with an empty"):
        _reservoir().load(path)


def _stage(r: Reservoir, guard_s: float = 10.0, regime_s: float = 30.0) -> ReservoirStage:
    return ReservoirStage(r, guard_s=guard_s, regime_change_after_s=regime_s)


def test_normal_windows_are_admitted_only_after_the_guard_and_never_near_a_short_anomaly() -> None:
    r = _reservoir()
    stage = _stage(r)
    alarm_at = set(range(100, 112, 2))  # a 10 s anomaly: shorter than regime_change_after_s
    stage.on_scored([_scored(t, t in alarm_at) for t in range(10, 200, 2)])
    kept = set((r.snapshot().end_ms // 1000).tolist())
    assert not kept & alarm_at, "alarm windows of a short anomaly are never normal"
    # first alarm window spans 97..100 s, last ends at 110 s; guard 10 s either side
    assert not {t for t in kept if 97 - 10 <= t <= 110 + 10 + 3}, "guard interval around it"
    assert {20, 60, 86, 124, 180} <= kept
    assert max(kept) <= 198 - 3 - 10, "the last guard_s of windows still wait"


def test_a_sustained_alarm_is_a_regime_change_whose_windows_are_admitted() -> None:
    r = _reservoir()
    stage = _stage(r, guard_s=10.0, regime_s=30.0)
    stage.on_scored([_scored(t, t >= 100) for t in range(60, 200, 2)])
    kept = (r.snapshot().end_ms // 1000).tolist()
    assert stage.in_regime_change("s")
    assert [t for t in kept if t >= 100] == list(range(100 + W, 200, 2)), \
        "from the episode start on, once it lasted regime_change_after_s"
    assert not [t for t in kept if 97 - 10 <= t < 100], "the guard before the onset still holds"
    assert 86 in kept


def test_replayed_windows_are_not_offered_and_on_tick_saves_periodically(tmp_path: Path) -> None:
    r = _reservoir()
    stage = ReservoirStage(r, guard_s=0.0, regime_change_after_s=30.0, path=tmp_path / "r.npz", save_every_s=5.0)
    stage.on_scored([_scored(t, False, replay=True) for t in range(10, 50, 2)])
    assert len(r) == 0
    stage.on_scored([_scored(t, False) for t in range(50, 60, 2)])
    assert len(r) == 3  # windows ending up to the newest window's start (nothing later can overlap them)
    stage.on_tick(100.0)
    assert not (tmp_path / "r.npz").exists()
    stage.on_tick(105.0)
    assert (tmp_path / "r.npz").exists()


def test_a_save_that_fails_is_logged_and_tried_again_and_the_stream_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "state"
    blocked.write_text("a file where the state folder should be")  # as a full disk, every write fails
    r = _reservoir()
    stage = ReservoirStage(r, guard_s=0.0, regime_change_after_s=30.0, path=blocked / "r.npz", save_every_s=5.0)
    stage.on_scored([_scored(t, False) for t in range(50, 60, 2)])
    stage.on_tick(100.0)
    assert stage.on_tick(105.0) == [] and len(r) == 3
    assert "could not save the retraining reservoir" in caplog.text
    blocked.unlink()
    stage.on_tick(110.0)
    assert (blocked / "r.npz").exists()


def test_an_alarm_seen_in_a_replay_keeps_its_guard_for_the_live_windows_after_it() -> None:
    r = _reservoir()
    stage = _stage(r, guard_s=10.0, regime_s=30.0)  # a partition's new owner: its lookback ends with a short fault
    stage.on_scored([_scored(t, 100 <= t <= 110, replay=True) for t in range(60, 112, 2)])
    stage.on_scored([_scored(t, False) for t in range(112, 200, 2)])
    kept = (r.snapshot().end_ms // 1000).tolist()
    assert kept and min(kept) - 3 > 110 + 10, "no live window within guard_s after the replayed alarm"
    assert not [t for t in kept if t < 112], "replayed windows are their previous owner's to admit"


def test_an_episode_that_began_in_the_replay_counts_towards_a_regime_change() -> None:
    r = _reservoir()
    stage = _stage(r, guard_s=10.0, regime_s=30.0)
    stage.on_scored([_scored(t, t >= 100, replay=True) for t in range(60, 120, 2)])
    assert not stage.in_regime_change("s") and len(r) == 0
    stage.on_scored([_scored(t, True) for t in range(120, 140, 2)])
    kept = (r.snapshot().end_ms // 1000).tolist()
    assert stage.in_regime_change("s"), "30 s of alarm in all, 20 of them replayed"
    assert kept == list(range(120, 140, 2)), "its live windows, the replayed ones were the previous owner's"
    again = _stage(_reservoir(), guard_s=10.0, regime_s=30.0)
    again.on_scored([_scored(t, t >= 100, replay=True) for t in range(60, 140, 2)])
    assert again.in_regime_change("s"), "an episode the replay saw last regime_change_after_s"


def test_a_sensor_holds_at_most_one_sample_while_it_waits_out_the_guard() -> None:
    from aestream.retrain.stage import ReservoirStage
    from aestream.stream.windows import Window

    r = Reservoir(capacity=1000, window_size=4, n_channels=2, half_life_s=1e6, max_age_s=1e9)
    stage = ReservoirStage(r, guard_s=300, regime_change_after_s=1800, sample_interval_s=300)
    batch = np.zeros((600, 4, 2), dtype=np.float32)
    for i in range(600):  # 10 minutes at 1 Hz, every window normal
        stage.offer(Window("s", i * 1000, i * 1000 + 3000, batch[i]), alarm=False)
        assert len(stage._tracks["s"].pending) <= 2, "guard_s / sample_interval_s + 1"
    assert r.n_added == 1, "one sample per 300 s; the second still waits out its guard"
    assert len(stage._tracks["s"].pending) == 1
    pending = stage._tracks["s"].pending[0].values
    assert pending.base is None, "a copy, not a view that pins the whole batch"
    stage.forget(["s"])
    assert "s" not in stage._tracks


def test_to_a_topic_the_admitted_windows_are_messages_of_the_step() -> None:
    from aestream.retrain.stage import END_MS_HEADER, ReservoirStage, decode_window
    from aestream.stream.stages import Scored
    from aestream.stream.windows import Window

    stage = ReservoirStage(None, topic="g-normal-windows", guard_s=10, regime_change_after_s=1800,
                           sample_interval_s=0)
    values = np.arange(8, dtype=np.float32).reshape(4, 2)
    scored = [Scored(Window("pump-1", t * 1000, t * 1000 + 3000, values), 0.1, 1.0, False, np.ones(2), "v1")
              for t in range(30)]
    out = stage.on_scored(scored)
    assert [m.key for m in out] == [b"pump-1"] * 17, "windows ending 10 s before the newest start are past the guard"
    assert out[0].topic == "g-normal-windows" and dict(out[0].headers)[END_MS_HEADER] == b"3000"
    assert decode_window(out[0].value).tolist() == values.tolist()
    assert stage.on_scored([]) == [], "each message is returned once"


def test_a_sensor_holds_one_sample_per_interval_while_it_waits_out_the_guard() -> None:
    r = _reservoir()
    stage = ReservoirStage(r, guard_s=300.0, regime_change_after_s=1800.0, sample_interval_s=300.0)
    stage.on_scored([_scored(t, False, sensor=s) for s in ("a", "b", "c") for t in range(10, 250, 2)])
    assert stage.n_pending == 3 and len(r) == 0, "one window of each sensor held: its first, waiting out the guard"
    stage.on_scored([_scored(400, False, sensor="a")])
    assert stage.n_pending == 3 and r.snapshot().end_ms.tolist() == [10_000], "a's first admitted, its next held"
    stage.forget(["a", "b"])
    assert stage.n_pending == 1


def test_a_short_fault_then_a_silence_then_one_alarm_is_not_a_regime_change() -> None:
    r = _reservoir()
    stage = _stage(r, guard_s=10.0, regime_s=30.0)
    stage.on_scored([_scored(t, False) for t in range(10, 100, 2)])
    stage.on_scored([_scored(t, True) for t in range(100, 110, 2)])  # a 10 s fault, then the sensor goes silent
    stage.on_scored([_scored(400, True)])  # back 290 s later (far more than guard_s), one alarm window
    assert not stage.in_regime_change("s"), "the first episode ended guard_s after its last alarm"
    stage.on_scored([_scored(t, False) for t in range(402, 600, 2)])
    kept = set((r.snapshot().end_ms // 1000).tolist())
    assert not {t for t in kept if 100 <= t < 110 or t == 400}, "no fault window is learned as normal"
    assert not stage.in_regime_change("s")


@pytest.mark.parametrize("span_s", [120, 40])  # sliding windows (overlapping), tumbling (each after the last)
def test_a_slow_sensor_in_alarm_without_a_break_is_a_regime_change(span_s: int) -> None:
    r = _reservoir()
    stage = _stage(r, guard_s=10.0, regime_s=300.0)  # its windows end 40 s apart: more than guard_s
    for end_ms in range(100_000, 1_000_000, 40_000):
        stage.offer(Window("slow", end_ms - span_s * 1000 + 1, end_ms, np.ones((W, C), np.float32)), alarm=True)
    assert stage.in_regime_change("slow")
    assert len(r) > 0


T0 = 1_767_225_600_000


def _saved(path: Path, capacity: int, half_life_s: float, n: int, step_ms: int) -> Path:
    """A reservoir of ``capacity`` under ``half_life_s`` offered ``n`` windows ``step_ms`` apart from T0, saved."""
    old = _reservoir(capacity=capacity, half_life_s=half_life_s)
    for i in range(n):
        old.add("s", T0 + i * step_ms, np.zeros((W, C), np.float32))
    return old.save(path)


def test_a_reservoir_loaded_under_a_longer_half_life_keeps_taking_new_windows(tmp_path: Path) -> None:
    path = _saved(tmp_path / "reservoir.npz", capacity=100, half_life_s=3600.0, n=1000, step_ms=60_000)
    r = _reservoir(capacity=100, half_life_s=86_400.0)  # retrain.half_life_s raised, then a restart
    assert r.load(path)
    kept = sum(r.add("s", T0 + i * 60_000, np.ones((W, C), np.float32)) for i in range(1000, 1000 + 3 * 1440))
    assert kept > 50 and r.snapshot().end_ms.max() > T0 + (1000 + 2 * 1440) * 60_000, "the last day is held"
    assert r.save(path) and '"half_life_s": 86400.0' in (tmp_path / "reservoir.json").read_text()


def test_a_reservoir_saved_without_its_half_life_loads_with_keys_on_this_one(tmp_path: Path) -> None:
    import json

    path = _saved(tmp_path / "reservoir.npz", capacity=10, half_life_s=60.0, n=20, step_ms=1000)
    with np.load(path) as data:  # as the files written before the half-life was saved with them
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    meta.pop("half_life_s", None)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    r = _reservoir(capacity=10, half_life_s=86_400.0)
    assert r.load(path) and len(r) == 10
    assert sum(r.add("s", T0 + (20 + i) * 1000, np.ones((W, C), np.float32)) for i in range(200)) > 0


@pytest.mark.parametrize(("data", "why"), [(b"", "an empty message"), (None, "an empty message"),
                                          ("npz", "not NpzFile"), ("cut", "not a .npy array")])
def test_a_normal_windows_record_that_is_no_window_is_a_value_error(data: bytes | str | None, why: str) -> None:
    import io

    from aestream.retrain.stage import decode_window, encode_window

    if data == "npz":  # an archive of arrays, not one: np.load gives no array
        buf = io.BytesIO()
        np.savez(buf, w=np.zeros((4, 2), dtype=np.float32))
        data = buf.getvalue()
    elif data == "cut":
        data = encode_window(np.zeros((4, 2)))[:90]
    with pytest.raises(ValueError, match=why.replace(".", r"\.")):
        decode_window(data)
