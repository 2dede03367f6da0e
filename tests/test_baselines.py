"""Per-sensor baselines: what a sensor calibrates on, how its windows are scored, and the worker around them (no
events while calibrating, a fleet at several operating points, a model swap, background fine-tunes)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from aestream.commands.simulate import Plant
from aestream.config import Config
from aestream.detect.baselines import Baseline, SensorBaselines, fit_baseline, sliding_windows
from aestream.stream.codec import encode_reading
from aestream.stream.messages import Outgoing, Record
from aestream.stream.stages import Stage
from aestream.stream.windows import Window, Windower
from aestream.training.finetune import FINETUNE_MIN_STD_FRACTION, Finetuner, build_baselines
from aestream.worker import Worker

CHANNELS = ("temperature", "pressure", "vibration", "current")
START_MS = 1_767_225_600_000


def _cfg(mode: str = "shared", **stream: Any) -> Config:
    return Config().replace(stream={"channels": CHANNELS, "window_size": 16, "stride": 1, **stream},
                            model={"detrend_channels": ()},
                            baselines={"mode": mode, "n_readings": 100, "finetune_blocking": True,
                                       "finetune_epochs": 5, "n_refresh_windows": 10},
                            threshold={"quantile": 0.99, "factor": 2.0, "k": 1, "n": 1})


def _windows(cfg: Config, readings: np.ndarray, ts: np.ndarray, phase_at: tuple[int, int] | None = None
             ) -> list[Window]:
    """Sensor "s"'s windows; ``phase_at`` (reading, phase): a phase restored before that reading, as a replay's end."""
    s = cfg.stream
    win = Windower(s.window_size, s.stride, len(s.channels), s.max_gap_ms, s.stride_ms)
    out = []
    for i, (t, r) in enumerate(zip(ts.tolist(), readings)):
        if phase_at is not None and i == phase_at[0]:
            win.restore_phases({"s": phase_at[1]})
        if (w := win.push("s", t, r)) is not None:
            out.append(w)
    return out  # type: ignore[return-value]


@pytest.mark.parametrize(("mode", "stride"), [("shared", 1), ("shared", 4), ("finetune", 1)])
def test_a_sensor_calibrates_on_exactly_its_first_readings(train_small: Any, mode: str, stride: int) -> None:
    cfg = _cfg(mode, stride=stride)  # its own model's input scaling too: every calibration reading (its validation's)
    bundle = train_small(cfg)
    readings = np.random.default_rng(0).normal(5.0, 2.0, (300, 4))
    base = build_baselines(cfg)
    assert base is not None
    split = base.split(_windows(cfg, readings, START_MS + 1000 * np.arange(300)), bundle.scorer, "v0001")
    (sensor, _, baseline, scores), = split.finished
    assert (baseline.scorer is not None) == (mode == "finetune")
    assert sensor == "s" and baseline.n_readings == 100
    np.testing.assert_allclose(baseline.mean, readings[:100].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(baseline.std, readings[:100].std(axis=0), rtol=1e-6)
    n_windows = len(sliding_windows(readings[:100], 16, stride))
    if mode == "finetune":  # the scores of its validation windows: the last 30 % (model.validation_fraction)
        n_windows -= int(round(n_windows * (1 - cfg.model.validation_fraction)))
    assert len(scores) == n_windows
    assert split.keep[0] == (100 - 16) // stride + 1  # the first window after calibration is scored
    assert base.n_calibrating == 0 and "s" in base.ready


@pytest.mark.parametrize(("mode", "stream", "phase_at"), [
    ("shared", {"stride_ms": 1000}, None), ("finetune", {"stride_ms": 1000}, None),
    ("shared", {"stride": 4}, (50, 0)), ("shared", {"stride": 4}, (50, 2))])
def test_a_calibration_takes_each_reading_once_with_a_time_stride_or_a_restored_phase(
        train_small: Any, mode: str, stream: dict, phase_at: tuple[int, int] | None) -> None:
    """With stride_ms a window brought no rows when it overlapped the one before: 100 readings calibrated on 7
    windows of 16 cut apart (a fine-tune's threshold on one validation window). Across a phase restored at a
    replay's end a window took its last stride rows, which were not all new: a reading twice, or one left out."""
    cfg = _cfg(mode, **stream)
    bundle = train_small(cfg)
    readings = np.random.default_rng(3).normal(5.0, 2.0, (300, 4))
    base = build_baselines(cfg)
    assert base is not None
    split = base.split(_windows(cfg, readings, START_MS + 1000 * np.arange(300), phase_at), bundle.scorer, "v0001")
    (_, _, baseline, scores), = split.finished
    n = baseline.n_readings
    assert 100 <= n < 104
    np.testing.assert_allclose(baseline.mean, readings[:n].mean(axis=0), rtol=1e-6)  # its first n, each once
    n_windows = n - 16 + 1 if "stride_ms" in stream else len(scores)
    if mode == "finetune":
        n_windows -= int(round(n_windows * (1 - cfg.model.validation_fraction)))
    assert len(scores) == n_windows


def test_a_gap_during_calibration_starts_a_new_run(train_small: Any) -> None:
    cfg = _cfg()
    bundle = train_small(cfg)
    readings = np.random.default_rng(1).normal(0.0, 1.0, (200, 4))
    ts = START_MS + 1000 * np.arange(200)
    ts[60:] += 60_000  # a minute of silence after reading 60: the window restarts there
    base = SensorBaselines(cfg.baselines, cfg.threshold, 16, 1)
    split = base.split(_windows(cfg, readings, ts), bundle.scorer, "v0001")
    (_, _, baseline, scores), = split.finished
    np.testing.assert_allclose(baseline.mean, readings[:100].mean(axis=0), rtol=1e-6)
    assert len(scores) == (60 - 15) + (40 - 15)  # no calibration window spans the gap


def test_readings_too_extreme_for_a_baseline_are_calibrated_again(train_small: Any,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    cfg = _cfg()
    bundle = train_small(cfg)
    readings = np.random.default_rng(3).normal(0.0, 1.0, (300, 4))
    readings[50, 2] = 1e300  # a fuzzed value: its window's error overflows
    base = SensorBaselines(cfg.baselines, cfg.threshold, 16, 1)
    with np.errstate(over="ignore", invalid="ignore"):
        split = base.split(_windows(cfg, readings, START_MS + 1000 * np.arange(300)), bundle.scorer, "v0001")
    # the first try (readings 0..99) refused; the second starts with the next window, readings 85..100, and ends
    # with the window ending at reading 184
    (_, end_ms, baseline, _), = split.finished
    assert end_ms == START_MS + 184_000 and np.isfinite(baseline.threshold)
    np.testing.assert_allclose(baseline.mean, readings[85:185].mean(axis=0), rtol=1e-6)
    assert "no baseline from its 100 calibration readings" in caplog.text


def test_calibrations_due_in_one_step_finish_together_as_one_by_one(train_small: Any) -> None:
    """Three sensors interleaved in one step, one of them too extreme for its first try: the baselines, scores,
    kept windows and the refused sensor's second calibration are those of each sensor split alone."""
    cfg = _cfg()
    bundle = train_small(cfg)
    rng = np.random.default_rng(5)
    ts = START_MS + 1000 * np.arange(300)
    per_sensor = {s: rng.normal(i, 1.0 + i, (300, 4)) for i, s in enumerate(("a", "b", "c"))}
    per_sensor["b"][40, 1] = 1e300
    together = SensorBaselines(cfg.baselines, cfg.threshold, 16, 1)
    with np.errstate(over="ignore", invalid="ignore"):
        wins = {s: [w._replace(sensor=s) for w in _windows(cfg, r, ts)] for s, r in per_sensor.items()}
        mixed = [w for trio in zip(*wins.values()) for w in trio]
        split = together.split(mixed, bundle.scorer, "v0001")
        alone = {s: SensorBaselines(cfg.baselines, cfg.threshold, 16, 1).split(ws, bundle.scorer, "v0001")
                 for s, ws in wins.items()}
    assert sorted(s for s, *_ in split.finished) == ["a", "b", "c"]
    for sensor, end_ms, baseline, scores in split.finished:
        (_, want_end, want, want_scores), = alone[sensor].finished
        assert end_ms == want_end
        np.testing.assert_allclose(baseline.threshold, want.threshold, rtol=1e-5)
        np.testing.assert_allclose(baseline.channel_scale, want.channel_scale, rtol=1e-5)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
    assert split.keep == sorted(split.keep)
    kept = {s: [i // 3 for i in split.keep if mixed[i].sensor == s] for s in wins}
    assert kept == {s: alone[s].keep for s in wins}
    assert sorted(x[:2] for x in split.started) == sorted(x[:2] for a in alone.values() for x in a.started)
    assert all((mixed[i].sensor, mixed[i].end_ms) == (s, end) for s, end, i in split.started), "each its window"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_sensors_own_scales_standardise_its_windows(train_small: Any, dtype: type) -> None:
    pre = train_small(_cfg()).scorer.preprocessor
    w = np.random.default_rng(2).normal(7.0, 3.0, (5, 16, 4))
    mean, std = w.mean(axis=(0, 1)), w.std(axis=(0, 1))
    rows = np.tile(mean, (5, 1)), np.tile(std, (5, 1))  # one row per window, as SensorBaselines.score gives them
    np.testing.assert_allclose(pre.tensor(w.astype(dtype), *rows).numpy(), (w - mean) / std, atol=1e-5)
    far = w + 1e5  # a level far from zero loses nothing to float32: the mean is taken off in two parts
    got = pre.tensor(far.astype(dtype), rows[0] + 1e5, rows[1]).numpy()
    np.testing.assert_allclose(got, (far.astype(dtype) - (mean + 1e5)) / std, atol=1e-5)


def test_a_baseline_travels_as_json() -> None:
    b = Baseline(np.array([1.0, 2.0]), np.array([0.5, 0.25]), np.array([1e-3, 2e-3]), 3.25, "v0007", 400)
    assert Baseline.from_dict(b.to_dict()) == b


def _fit(cfg: Config, bundle: Any, readings: np.ndarray) -> Baseline:
    return fit_baseline([readings], bundle.scorer, cfg.threshold, window_size=16, stride=1, model_version="v0001",
                        min_std_fraction=0.1)[0]


def test_a_channel_steadier_than_the_fleet_is_scaled_by_min_std_fraction_of_the_fleet_s_spread(
        train_small: Any) -> None:
    cfg = _cfg()
    bundle = train_small(cfg)
    readings = np.random.default_rng(7).normal(5.0, 2.0, (100, 4))
    readings[:, 2] = 3.0  # a channel stuck at one value
    baseline = _fit(cfg, bundle, readings)
    assert baseline.std[2] == 0.1 * bundle.scorer.preprocessor.std[2]
    np.testing.assert_allclose(baseline.std[[0, 1, 3]], readings[:, [0, 1, 3]].std(axis=0), rtol=1e-12)


def test_a_sensor_s_error_scale_is_each_channel_s_mean_error_over_its_calibration_windows(train_small: Any) -> None:
    cfg = _cfg()
    bundle = train_small(cfg)
    readings = np.random.default_rng(8).normal(5.0, 2.0, (100, 4))
    baseline = _fit(cfg, bundle, readings)
    windows = sliding_windows(readings, 16, 1)
    rows = np.tile(baseline.mean, (len(windows), 1)), np.tile(baseline.std, (len(windows), 1))
    np.testing.assert_allclose(baseline.channel_scale,
                               bundle.scorer.raw_channel_errors(windows, *rows).mean(axis=0), rtol=1e-9)


_OLD = Baseline(np.zeros(4), np.ones(4), np.ones(4), 1.0, "v0001", 100)


def _restored(train_small: Any) -> tuple[SensorBaselines, Any]:
    """Baselines (n_refresh_windows = 10) with sensor "s" restored as _OLD, and a model's scorer."""
    cfg = _cfg()
    base = SensorBaselines(cfg.baselines, cfg.threshold, 16, 1)
    base.restore({"s": _OLD})
    return base, train_small(cfg).scorer


def test_a_refit_after_a_swap_learns_from_the_normal_windows_only(train_small: Any) -> None:
    base, scorer = _restored(train_small)
    errors = np.random.default_rng(9).uniform(0.5, 1.5, (12, 4))
    alarms = np.zeros(12, dtype=bool)
    alarms[[3, 7]] = True
    errors[alarms] = 1000.0  # a fault's errors
    (sensor, refit), = base.refresh(["s"] * 12, errors, alarms, scorer, "v0002")
    assert sensor == "s" and refit.model_version == "v0002" and base.ready["s"] is refit
    np.testing.assert_allclose(refit.channel_scale, errors[~alarms].mean(axis=0), rtol=1e-12)


def test_a_window_whose_error_overflowed_is_no_normal_window_for_a_refit(train_small: Any) -> None:
    """A reading of 1e30 is finite in float32; its window's squared error is not. Taken as normal (the k-of-n rule
    does not alarm at the first window over the threshold), it gave the refit an infinite scale and a NaN
    threshold: a sensor that never alarmed again, or a step that raised building its events."""
    base, scorer = _restored(train_small)
    errors = np.random.default_rng(9).uniform(0.5, 1.5, (11, 4))
    errors[4] = np.inf
    (_, refit), = base.refresh(["s"] * 11, errors, np.zeros(11, dtype=bool), scorer, "v0002")
    assert np.isfinite(refit.threshold) and np.isfinite(refit.channel_scale).all()
    np.testing.assert_allclose(refit.channel_scale, np.delete(errors, 4, axis=0).mean(axis=0), rtol=1e-12)


def test_a_restored_baseline_ends_the_calibration_under_way_of_its_sensor(train_small: Any) -> None:
    cfg = _cfg()
    bundle = train_small(cfg)
    readings = np.random.default_rng(10).normal(5.0, 2.0, (50, 4))
    base = SensorBaselines(cfg.baselines, cfg.threshold, 16, 1)
    base.split(_windows(cfg, readings, START_MS + 1000 * np.arange(50)), bundle.scorer, "v0001")
    assert base.n_calibrating == 1  # 50 of its 100 readings
    assert base.restore({"s": _OLD}) == {"s": _OLD}
    assert base.n_calibrating == 0 and base.ready["s"] is _OLD


def test_in_shared_mode_a_restored_baseline_with_its_own_model_is_calibrated_again(
        train_small: Any, caplog: pytest.LogCaptureFixture) -> None:
    cfg = _cfg("shared")  # a worker that ran "finetune" before wrote the baseline with its own model
    own = dataclasses.replace(_OLD, scorer=train_small(cfg).scorer)
    base = SensorBaselines(cfg.baselines, cfg.threshold, 16, 4)
    assert base.restore({"s": own, "t": _OLD}) == {"t": _OLD}
    assert "s" not in base.ready and 'baselines.mode = "shared"' in caplog.text


def test_a_forgotten_sensor_s_refit_takes_none_of_the_errors_gathered_before(train_small: Any) -> None:
    base, scorer = _restored(train_small)
    errors = np.random.default_rng(11).uniform(0.5, 1.5, (16, 4))
    normal = np.zeros(6, dtype=bool)
    assert base.refresh(["s"] * 6, errors[:6], normal, scorer, "v0002") == []
    base.forget(["s"])  # its partition moved away, and came back
    base.restore({"s": _OLD})
    assert base.refresh(["s"] * 6, errors[6:12], normal, scorer, "v0002") == []  # 6 of 10, not 12
    (_, refit), = base.refresh(["s"] * 4, errors[12:], normal[:4], scorer, "v0002")
    np.testing.assert_allclose(refit.channel_scale, errors[6:].mean(axis=0), rtol=1e-12)


def test_a_sensor_alarming_under_an_earlier_baseline_for_a_regime_change_calibrates_again(
        train_small: Any) -> None:
    """In "shared" mode a sensor whose baseline is of an earlier model refits from windows that model finds normal:
    after a lasting shift there were none, and the sensor alarmed on every window for good, the retrain that
    learned the shift notwithstanding. Alarming for ``retrain.regime_change_after_s`` now, it calibrates again."""
    cfg = _cfg("shared")
    base = SensorBaselines(cfg.baselines, cfg.threshold, 16, 1, regime_change_after_s=60.0)
    base.restore({"s": _OLD})
    scorer = train_small(cfg).scorer
    errors, alarms = np.full((10, 4), 50.0), np.ones(10, dtype=bool)

    def refresh(first_s: int, alarms: np.ndarray = alarms) -> list[Any]:
        return base.refresh(["s"] * 10, errors, alarms, scorer, "v0002", START_MS + 1000 * (first_s + np.arange(10)))

    assert refresh(0) == [] and refresh(30) == [] and base.ready["s"] is _OLD  # alarming 39 s: a fault, kept
    assert refresh(40, np.arange(10) != 5) == [] and refresh(90) == []  # a normal window at 45 s: since 46 s
    assert base.ready["s"] is _OLD
    assert refresh(100) == [] and "s" not in base.ready  # 60 s since 46 s: calibrates again under the new model


class _Calibrations(Stage):
    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []

    def on_calibration(self, sensor: str, end_ms: int, baseline: Any) -> list[Outgoing]:
        self.seen.append((sensor, baseline is not None))
        return []


def _records(cfg: Config, plant: Plant, steps: int, offset: dict[str, float], step0: int = 0,
             anomalies: list[tuple[int, str, int, int]] | None = None) -> list[Record]:
    readings = plant.readings(steps, START_MS + step0 * plant.period_ms, anomalies or [], step0=step0)
    return [Record("in", 0, i, s.encode(), encode_reading(s, ts, [v + offset.get(s, 0.0) * (1 + j)
                                                                     for j, v in enumerate(vals)]), 0)
            for i, (s, ts, vals) in enumerate(readings)]


@pytest.mark.parametrize("mode", ["shared", "finetune"])
def test_a_fleet_at_different_operating_points_is_quiet_until_a_fault(
        train_small: Any, one_model: Any, recording_sink: Any, scripted_source: Any, mode: str) -> None:
    cfg = _cfg(mode)
    bundle = train_small(cfg)  # trained on the plant (seed 0) at its own operating point
    plant = Plant(4, CHANNELS, seed=0)
    plant.signal(800)  # the draws train_small made
    offset = {"sensor-01": 20.0, "sensor-02": -15.0}  # two sensors run far from it
    calm = _records(cfg, plant, 300, offset)
    fault = _records(cfg, plant, 200, offset, step0=300, anomalies=[(1, "shift", 380, 60)])
    stage = _Calibrations()
    sink = recording_sink()
    worker = Worker(cfg, scripted_source([calm[:200], calm[200:], fault]), sink, one_model(bundle), stages=[stage],
                    clock=lambda: 0.0)
    worker.refresh_model(force=True)
    first = worker.step()
    assert first.events == 0 and first.calibrating == 4  # 50 readings each: still calibrating
    assert sorted(stage.seen) == [(f"sensor-0{i}", False) for i in range(4)]
    quiet = worker.step()
    assert quiet.calibrating == 0 and sorted(s for s, done in stage.seen if done) == [f"sensor-0{i}" for i in range(4)]
    assert quiet.events == 0, [e["sensor"] for e in quiet.events_out]  # every sensor judged against its own
    faulty = worker.step()
    assert {e["sensor"] for e in faulty.events_out} == {"sensor-01"}
    thresholds = {s: worker.rule.threshold_for(s) for s in offset}  # type: ignore[union-attr]
    assert len(set(thresholds.values())) == 2  # one threshold each
    if mode == "finetune":
        assert all(worker.baselines.ready[s].scorer is not None for s in offset)  # type: ignore[union-attr]


def test_a_sensor_back_after_its_ttl_is_judged_by_its_own_threshold_again(
        train_small: Any, one_model: Any, recording_sink: Any, scripted_source: Any) -> None:
    cfg = _cfg("shared", sensor_ttl_s=100.0)
    bundle = train_small(cfg)
    plant = Plant(4, CHANNELS, seed=0)
    plant.signal(800)
    offset = {"sensor-01": 20.0}
    now = [0.0]
    worker = Worker(cfg, scripted_source([_records(cfg, plant, 200, offset), [],
                                          _records(cfg, plant, 50, offset, step0=3800)]),
                    recording_sink(), one_model(bundle), clock=lambda: now[0])
    worker.refresh_model(force=True)
    worker.step()
    assert worker.rule is not None and worker.baselines is not None
    own = {s: worker.rule.threshold_for(s) for s in worker.baselines.ready}
    assert len(own) == 4 and all(t != bundle.threshold for t in own.values())
    now[0] = 500.0
    worker.step()  # every sensor idle past sensor_ttl_s: evicted
    now[0] = 501.0
    quiet = worker.step()  # back an hour later, each still scored by its own baseline
    assert {s: worker.rule.threshold_for(s) for s in own} == own
    assert quiet.events == 0, [e["sensor"] for e in quiet.events_out]


def test_without_baselines_the_shifted_sensors_alarm_at_once(
        train_small: Any, one_model: Any, recording_sink: Any, scripted_source: Any) -> None:
    cfg = _cfg("off")
    bundle = train_small(cfg)
    calm = _records(cfg, Plant(4, CHANNELS, seed=0), 300, {"sensor-01": 20.0})
    worker = Worker(cfg, scripted_source([calm]), recording_sink(), one_model(bundle), clock=lambda: 0.0)
    worker.refresh_model(force=True)
    assert {e["sensor"] for e in worker.step().events_out} == {"sensor-01"}


class _SwappingStore:
    """A store serving ``serving``: a test swaps the model by setting it."""

    def __init__(self, serving: Any) -> None:
        self.serving = serving

    def current(self) -> str:
        return str(self.serving.version)

    def load(self, version: str | None = None, device: str = "cpu") -> Any:
        return self.serving


def _swapping_store(cfg: Config, train_small: Any) -> tuple[_SwappingStore, Any]:
    """A store serving v0001 (vanilla), and the v0002 (sparse) a test swaps in."""
    first, second = train_small(cfg, seed=0), train_small(cfg, seed=1, family="sparse")
    first.version, second.version = "v0001", "v0002"
    return _SwappingStore(first), second


def test_after_a_model_swap_the_baselines_are_refitted_from_normal_windows(
        train_small: Any, recording_sink: Any, scripted_source: Any) -> None:
    cfg = _cfg("shared")
    store, second = _swapping_store(cfg, train_small)
    plant = Plant(2, CHANNELS, seed=4)
    worker = Worker(cfg, scripted_source([_records(cfg, plant, 200, {}), _records(cfg, plant, 5, {}, step0=200),
                                          _records(cfg, plant, 30, {}, step0=205)]),
                    recording_sink(), store, clock=lambda: 0.0, model_check_interval_s=0.0)
    worker.step()
    before = dict(worker.baselines.ready)  # type: ignore[union-attr]
    assert {b.model_version for b in before.values()} == {"v0001"}
    store.serving = second
    worker.step()  # swapped: still judged by the old baselines, 5 windows gathered of the 10 needed
    assert worker.bundle is second and {b.model_version for b in worker.baselines.ready.values()} == {"v0001"}  # type: ignore[union-attr]
    assert worker.rule.threshold_for("sensor-00") == before["sensor-00"].threshold  # type: ignore[union-attr]
    worker.step()
    after = worker.baselines.ready  # type: ignore[union-attr]
    assert {b.model_version for b in after.values()} == {"v0002"}
    for s, b in after.items():
        np.testing.assert_array_equal(b.mean, before[s].mean)  # the input scaling stays
        assert b.threshold != before[s].threshold
        assert worker.rule.threshold_for(s) == b.threshold  # type: ignore[union-attr]


def test_the_events_of_a_step_that_refits_carry_the_thresholds_their_alarms_were_decided_with(
        train_small: Any, recording_sink: Any, scripted_source: Any) -> None:
    cfg = _cfg("shared")
    store, second = _swapping_store(cfg, train_small)
    plant = Plant(2, CHANNELS, seed=4)
    # right after the first 200 steps, 36 more; sensor-00 far off its operating point in the last 6: the step whose
    # normal windows refit the baselines has its alarms too
    fault_from = START_MS + 230 * plant.period_ms
    refit_and_fault = [Record("in", 0, 400 + i, s.encode(), encode_reading(s, ts, [
        v + (20.0 * (1 + j) if s == "sensor-00" and ts >= fault_from else 0.0) for j, v in enumerate(vals)]), 0)
        for i, (s, ts, vals) in enumerate(plant.readings(36, START_MS, step0=200))]
    worker = Worker(cfg, scripted_source([_records(cfg, plant, 200, {}), refit_and_fault]),
                    recording_sink(), store, clock=lambda: 0.0, model_check_interval_s=0.0)
    worker.step()
    before = {s: b.threshold for s, b in worker.baselines.ready.items()}  # type: ignore[union-attr]
    store.serving = second
    refitting = worker.step()
    assert {b.model_version for b in worker.baselines.ready.values()} == {"v0002"}  # type: ignore[union-attr]
    events = [e for e in refitting.events_out if e["sensor"] == "sensor-00"]
    assert events, "the fault alarms under the old baseline"
    assert worker.rule.threshold_for("sensor-00") != before["sensor-00"]  # type: ignore[union-attr]
    for e in events:
        assert e["threshold"] == pytest.approx(before["sensor-00"], rel=1e-4), "decided with the old threshold"
        assert e["score"] >= e["threshold"]


def test_background_fine_tunes_are_bounded_and_handed_out_when_done(train_small: Any) -> None:
    cfg = _cfg("finetune").replace(baselines={"finetune_blocking": False, "finetune_queue": 1})
    bundle = train_small(cfg)
    base = build_baselines(cfg)
    assert base is not None and isinstance(base.finetuner, Finetuner)
    plant = Plant(2, CHANNELS, seed=5)
    readings = plant.readings(150, START_MS)
    windows = [w for s, ts, v in readings
               if (w := _WINDOWER.push(s, ts, v)) is not None]  # type: ignore[misc]
    split = base.split(windows, bundle.scorer, "v0001")
    assert len(split.finished) == 2  # both judged by the shared model at once
    assert all(b.scorer is None for _, _, b, _ in split.finished)
    assert base.finetuner.n_pending == 1 and base.finetuner.n_dropped == 1  # the queue holds one
    assert base.background_waiting and not base.finetuned(), "nothing runs until the worker gives it time"
    slices = 0
    done: list[Any] = []
    while not done and slices < 100_000:
        base.work(0.001)  # a slice as short as it gets: one optimiser step at least
        slices += 1
        done = base.finetuned()
    assert slices > 1, "the fine-tune was spread over several slices"
    (sensor, baseline, _), = done
    assert not base.background_waiting
    assert baseline.scorer is not None and base.ready[sensor] is baseline
    base.close()


_WINDOWER = Windower(16, 1, 4, 10_000)


def test_the_worker_gives_waiting_fine_tunes_its_idle_time_and_then_judges_by_them(
        train_small: Any, one_model: Any, recording_sink: Any) -> None:
    # a slice of ~nothing is one optimiser step: the fine-tunes take several slices however fast the machine
    cfg = _cfg("finetune").replace(baselines={"finetune_blocking": False, "finetune_slice_ms": 0.001})
    bundle = train_small(cfg)
    plant = Plant(2, CHANNELS, seed=6)
    polls = [_records(cfg, plant, 150, {})]
    timeouts: list[int | None] = []

    class Source:
        def poll(self, timeout_ms: int | None = None, max_records: int | None = None) -> list[Record]:
            timeouts.append(timeout_ms)
            return polls.pop(0) if polls else []

        def commit(self, offsets: dict[Any, int], metadata: dict[Any, str] | None = None) -> bool:
            return True

        def close(self) -> None:
            pass

    class Changelog:
        def record(self, part: Any, key: str, value: bytes) -> Outgoing:
            return Outgoing("baselines-changelog", value, key.encode())

        def restore(self, parts: Any) -> dict[Any, dict[str, bytes]]:
            return {}

    sink = recording_sink()
    worker = Worker(cfg, Source(), sink, one_model(bundle), clock=lambda: 0.0, changelog=Changelog())
    worker.refresh_model(force=True)
    worker.step()  # both sensors calibrate: the shared model judges them, their fine-tunes wait
    base = worker.baselines
    assert base is not None and base.background_waiting and all(b.scorer is None for b in base.ready.values())
    assert timeouts == [None], "nothing waited before this poll: it may block"
    shared_thresholds = {s: worker.rule.threshold_for(s) for s in base.ready}  # type: ignore[union-attr]
    steps = 0
    while base.background_waiting and steps < 10_000:
        worker.step()  # no records: each step is a slice of fine-tuning
        steps += 1
    assert not base.background_waiting and steps > 2, "the fine-tunes took several slices"
    assert set(timeouts[1:]) == {0}, "while fine-tunes waited, no poll blocked"
    assert all(b.scorer is not None for b in base.ready.values()), "each sensor now has its own model"
    for s, b in base.ready.items():  # judged by it at once, without waiting for its next window
        assert worker.rule.threshold_for(s) == b.threshold != shared_thresholds[s]  # type: ignore[union-attr]
    assert worker.state_pending, "the fine-tuned baselines wait for the next commit"
    worker.step()
    assert timeouts[-1] is None, "with none waiting the poll blocks again"
    # no record came since: that empty poll wrote the fine-tuned baselines all the same, not the next record's commit
    assert not worker.state_pending
    written = {m.key.decode(): m.value for m in sink.sent if m.topic == "baselines-changelog"}
    assert written.keys() == base.ready.keys()
    assert all(Baseline.from_json(v, "cpu").scorer is not None for v in written.values())


def test_an_idle_sensor_s_calibration_under_way_is_dropped_and_a_baseline_kept(
        train_small: Any, one_model: Any, recording_sink: Any, scripted_source: Any) -> None:
    """With sensor ids that come and go, each calibration left behind held up to n_readings raw rows for good."""
    cfg = _cfg("shared", sensor_ttl_s=10.0)
    now = [0.0]
    plant = Plant(4, CHANNELS, seed=0)
    early = _records(cfg, plant, 150, {})  # 150 readings of each of 4 sensors: calibrated (100), then scored
    late = [Record("in", 0, 10_000 + i, b"late", encode_reading("late", START_MS + 1000 * i, [1.0, 2, 3, 4]), 0)
            for i in range(40)]  # 40 of 100: still calibrating when it goes quiet
    worker = Worker(cfg, scripted_source([early, late]), recording_sink(), one_model(train_small(cfg)),
                    clock=lambda: now[0])
    worker.refresh_model(force=True)
    worker.step()
    worker.step()
    assert worker.baselines is not None and worker.baselines.n_calibrating == 1 and len(worker.baselines.ready) == 4
    now[0] = 100.0  # every sensor idle past stream.sensor_ttl_s
    worker.step()
    assert len(worker.windows) == 0 and worker.baselines.n_calibrating == 0
    assert len(worker.baselines.ready) == 4, "a baseline outlives its sensor's silence"
    assert set(worker._sensor_partition) == set(worker.baselines.ready)


def test_a_channel_steady_through_a_fine_tunes_calibration_is_floored_as_a_shared_baseline_s(train_small: Any) -> None:
    cfg = _cfg("finetune")
    bundle = train_small(cfg)
    readings = np.random.default_rng(0).normal(5.0, 2.0, (300, 4))
    readings[:, 3] = 10.0  # idle through calibration, then a move far inside the fleet's spread
    readings[200:, 3] = 10.01
    base = build_baselines(cfg)
    wins = _windows(cfg, readings, START_MS + 1000 * np.arange(300))
    split = base.split(wins, bundle.scorer, "v0001")
    floor = FINETUNE_MIN_STD_FRACTION * bundle.scorer.preprocessor.std
    own = base.ready["s"]
    assert own.scorer is not None and (own.std >= floor * (1 - 1e-9)).all()
    later = np.stack([wins[i].values for i in split.keep])
    batch, _ = base.score(later, ["s"] * len(later), bundle.scorer)
    assert batch.scores.max() < 10 * own.threshold  # not ~1e7 × its threshold
