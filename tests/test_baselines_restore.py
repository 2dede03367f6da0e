"""Baselines a sensor's next owner restores from the changelog, and baselines after model swaps: a fine-tune lost
with the partition is done again, a baseline made under another stream config is dropped, a refit takes the errors
of one model version only."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pytest
from stubs import Changelog, ChangelogSink, sensor_polls  # tests/stubs.py

from aestream.config import Config
from aestream.detect.baselines import Baseline, SensorBaselines
from aestream.detect.features import Preprocessor
from aestream.detect.scoring import Scorer
from aestream.models import build_model
from aestream.stream.windows import Window, Windower
from aestream.training.finetune import build_baselines
from aestream.worker import Worker

CHANNELS = ("temperature", "pressure", "vibration", "current")
START_MS = 1_767_225_600_000
SHARED: Any = object()  # the shared scorer: only handed on to the finetuner here


def _cfg(mode: str = "finetune", **stream: Any) -> Config:
    return Config().replace(stream={"channels": CHANNELS, "window_size": 16, "stride": 1, **stream},
                            model={"detrend_channels": ()},
                            baselines={"mode": mode, "n_readings": 100, "finetune_blocking": False,
                                       "n_refresh_windows": 4, "finetune_slice_ms": 0.01},
                            kafka={"commit_interval_ms": 0})


def _baseline(n_channels: int = 4, version: str = "v0001", own: Scorer | None = None) -> Baseline:
    return Baseline(np.zeros(n_channels), np.ones(n_channels), np.ones(n_channels), 1.0, version, 100, own)


def _own_model(window_size: int, n_channels: int = 4) -> Scorer:
    pre = Preprocessor(np.zeros(n_channels), np.ones(n_channels), np.zeros(n_channels, dtype=bool))
    return Scorer(build_model("vanilla", window_size=window_size, n_channels=n_channels), pre)


def _windows(readings: np.ndarray, ts: np.ndarray, stride: int = 1, stride_ms: int = 0) -> list[Window]:
    win = Windower(16, stride, 4, 10_000, stride_ms)
    return [w for t, r in zip(ts.tolist(), readings) if (w := win.push("s", t, r)) is not None]  # type: ignore[misc]


class _Queue:
    """A background finetuner that keeps what it is given; it refuses the first ``refuse`` (a full queue)."""

    n_pending = 0

    def __init__(self, refuse: int = 0) -> None:
        self.refuse = refuse
        self.submitted: list[tuple[str, list[np.ndarray], str]] = []
        self.forgotten: list[str] = []

    def submit(self, sensor: str, runs: list[np.ndarray], shared: Scorer, model_version: str) -> bool:
        if self.refuse:
            self.refuse -= 1
            return False
        self.submitted.append((sensor, runs, model_version))
        return True

    def run(self, budget_s: float) -> None: ...
    def done(self) -> list[Any]:
        return []

    def forget(self, sensors: list[str]) -> None:
        self.forgotten += sensors

    def close(self) -> None: ...


def _restored(cfg: Config, queue: _Queue, stride: int = 1, stride_ms: int = 0, **kw: Any) -> SensorBaselines:
    base = SensorBaselines(cfg.baselines, cfg.threshold, 16, stride, stride_ms, finetuner=queue, **kw)
    base.restore({"s": _baseline()})
    return base


def _first_calibration_runs(cfg: Config, windows: list[Window], stride: int, stride_ms: int) -> list[np.ndarray]:
    """The runs a first calibration of ``windows`` fine-tunes on (blocking)."""
    seen: list[list[np.ndarray]] = []

    def finetune(runs: list[np.ndarray], shared: Scorer, version: str) -> tuple[Baseline, np.ndarray]:
        seen.append(runs)
        return _baseline(), np.zeros(1)

    SensorBaselines(cfg.baselines, cfg.threshold, 16, stride, stride_ms, finetune=finetune).split(
        windows, SHARED, "v0001")
    return seen[0]


@pytest.mark.parametrize(("stride", "stride_ms", "gap"), [(1, 0, False), (4, 0, False), (1, 0, True), (1, 4000, True)])
def test_a_restored_sensor_without_its_own_model_fine_tunes_again_on_the_readings_a_calibration_takes(
        stride: int, stride_ms: int, gap: bool) -> None:
    cfg = _cfg()
    readings = np.random.default_rng(0).normal(5.0, 2.0, (300, 4))
    ts = START_MS + 1000 * np.arange(300)
    if gap:
        ts[60:] += 60_000
    windows = _windows(readings, ts, stride, stride_ms)
    queue = _Queue()
    base = _restored(cfg, queue, stride, stride_ms)
    split = base.split(windows, SHARED, "v0002")
    assert split.keep == list(range(len(windows))), "judged by the shared model meanwhile: every window scored"
    assert not split.started and not split.finished and base.n_calibrating == 0
    (sensor, runs, version), = queue.submitted
    assert sensor == "s" and version == "v0002"
    want = _first_calibration_runs(cfg, windows, stride, stride_ms)
    assert len(runs) == len(want)
    for got, expected in zip(runs, want):
        np.testing.assert_array_equal(got, expected)
    assert base.ready["s"].scorer is None, "the shared model judges it until its fine-tune is done"


def test_the_readings_go_on_gathering_over_steps_and_only_once() -> None:
    cfg = _cfg()
    readings = np.random.default_rng(1).normal(0.0, 1.0, (300, 4))
    windows = _windows(readings, START_MS + 1000 * np.arange(300))
    queue = _Queue()
    base = _restored(cfg, queue)
    base.split(windows[:50], SHARED, "v0001")  # readings 0..64: not yet enough
    assert not queue.submitted
    base.split(windows[50:], SHARED, "v0001")
    (_, runs, _), = queue.submitted
    np.testing.assert_array_equal(np.concatenate(runs), readings[:100].astype(np.float32))


def test_a_full_queue_makes_the_sensor_gather_again_from_its_later_readings(caplog: pytest.LogCaptureFixture) -> None:
    cfg = _cfg()
    readings = np.random.default_rng(2).normal(0.0, 1.0, (300, 4))
    windows = _windows(readings, START_MS + 1000 * np.arange(300))
    queue = _Queue(refuse=1)
    base = _restored(cfg, queue)
    with caplog.at_level(logging.INFO, logger="aestream.detect.baselines"):
        base.split(windows, SHARED, "v0001")
    (_, runs, _), = queue.submitted
    # refused at the window ending at reading 99: the next window (readings 85..100) starts the next gathering
    np.testing.assert_array_equal(np.concatenate(runs), readings[85:185].astype(np.float32))
    assert "sensor s: its fine-tune was not queued; it gathers its next 100 readings" in caplog.text


def test_a_restored_sensor_with_its_own_model_or_without_a_finetuner_gathers_nothing() -> None:
    cfg = _cfg()
    windows = _windows(np.random.default_rng(3).normal(0.0, 1.0, (300, 4)), START_MS + 1000 * np.arange(300))
    queue = _Queue()
    base = SensorBaselines(cfg.baselines, cfg.threshold, 16, 1, finetuner=queue)
    base.restore({"s": _baseline(own=_own_model(16))})
    assert base.split(windows, SHARED, "v0001").keep == list(range(len(windows)))
    shared_mode = SensorBaselines(cfg.baselines, cfg.threshold, 16, 1)
    shared_mode.restore({"s": _baseline()})
    assert shared_mode.split(windows, SHARED, "v0001").keep == list(range(len(windows)))
    assert not queue.submitted


def test_forgetting_a_sensor_drops_the_readings_it_gathered() -> None:
    cfg = _cfg()
    readings = np.random.default_rng(4).normal(0.0, 1.0, (300, 4))
    windows = _windows(readings, START_MS + 1000 * np.arange(300))
    queue = _Queue()
    base = _restored(cfg, queue)
    base.split(windows[:50], SHARED, "v0001")  # 65 readings gathered
    base.forget(["s"])
    assert queue.forgotten == ["s"]
    base.restore({"s": _baseline()})  # the partition comes back
    base.split(windows[150:200], SHARED, "v0001")  # 65 more: together they would be enough
    assert not queue.submitted
    base.split(windows[200:], SHARED, "v0001")
    (_, runs, _), = queue.submitted
    np.testing.assert_array_equal(np.concatenate(runs), readings[150:250].astype(np.float32))


def _calibrated(cfg: Config, models: Any, changelog: Changelog, source: Any) -> Worker:
    """A worker given partition in[0] that has read ``source``'s polls of sensor "s" (two steps): calibrated."""
    worker = Worker(cfg, source, ChangelogSink(changelog), models, changelog=changelog, clock=lambda: 0.0)
    worker.refresh_model(force=True)
    worker.on_partitions_assigned([("in", 0)])
    worker.step()
    worker.step()
    return worker


def test_a_fine_tune_lost_with_the_partition_is_done_by_its_next_owner(
        train_small: Any, one_model: Any, scripted_source: Any) -> None:
    cfg = _cfg().replace(stream={"window_size": 4}, baselines={"n_readings": 40})
    bundle, changelog, rng = train_small(cfg, epochs=3), Changelog(), np.random.default_rng(0)
    first = _calibrated(cfg, one_model(bundle), changelog, scripted_source([sensor_polls(0, 60, rng)]))
    # its fine-tune waits, unfinished, when the partition moves
    first.on_partitions_changed([("in", 0)])
    assert "model" not in json.loads(changelog.log["s"])
    second = Worker(cfg, scripted_source([sensor_polls(60, 200, rng)]), ChangelogSink(changelog), one_model(bundle),
                    changelog=changelog, clock=lambda: 0.0)
    second.refresh_model(force=True)
    second.on_partitions_assigned([("in", 0)])
    assert second.step().windows == 200 - 3, "every window judged, by the shared model meanwhile"
    base = second.baselines
    assert base is not None
    for _ in range(10_000):
        if not base.background_waiting:
            break
        second.step()
    assert base.ready["s"].scorer is not None, "fine-tuned again by the next owner"
    second.step()  # its next commit
    assert "model" in json.loads(changelog.log["s"]), "and written to the changelog"


def test_a_fine_tune_that_ends_after_its_sensor_went_idle_is_written_and_moves_with_the_partition(
        train_small: Any, one_model: Any, scripted_source: Any) -> None:
    cfg = _cfg().replace(stream={"window_size": 4, "sensor_ttl_s": 10.0}, baselines={"n_readings": 40})
    bundle, changelog, now = train_small(cfg, epochs=3), Changelog(), [0.0]
    worker = Worker(cfg, scripted_source([sensor_polls(0, 60, np.random.default_rng(0))]), ChangelogSink(changelog),
                    one_model(bundle), changelog=changelog, clock=lambda: now[0])
    worker.refresh_model(force=True)
    worker.on_partitions_assigned([("in", 0)])
    worker.step()
    worker.step()  # calibrated; its fine-tune waits
    base = worker.baselines
    assert base is not None and base.background_waiting
    now[0] = 100.0  # silent past sensor_ttl_s while it waits: evicted at the next step
    for _ in range(10_000):
        if not base.background_waiting:
            break
        worker.step()
    worker.step()  # its next commit
    assert base.ready["s"].scorer is not None
    assert "model" in json.loads(changelog.log["s"]), "the fine-tuned baseline reached the changelog"
    worker.on_partitions_changed([("in", 0)])
    assert "s" not in base.ready, "the partition's sensors are forgotten by the worker it left"


def test_each_earlier_model_goes_with_the_last_shared_baseline_of_its_version() -> None:
    cfg = _cfg("shared")
    base = SensorBaselines(cfg.baselines, cfg.threshold, 16, 1)
    base.ready = {"silent": _baseline(version="v1"), "busy": _baseline(version="v1")}
    models = {v: _own_model(16) for v in ("v1", "v2", "v3", "v4")}
    n = cfg.baselines.n_refresh_windows
    for before, now in (("v1", "v2"), ("v2", "v3"), ("v3", "v4")):
        base.renew(now, (before, models[before]))
        refit = base.refresh(["busy"] * n, np.ones((n, 4)), np.zeros(n, dtype=bool), models[now], now)
        assert [s for s, _ in refit] == ["busy"] and base.ready["busy"].model_version == now
    assert list(base._earlier) == ["v1"], "a model no sensor is judged by any more is let go"
    assert base._by_earlier == {"silent": "v1"}
    base.renew("v1", ("v4", models["v4"]))  # a rollback to the silent sensor's version
    assert list(base._earlier) == ["v4"] and base._by_earlier == {"busy": "v4"}


def test_a_refit_after_swaps_takes_the_errors_of_the_serving_version_only() -> None:
    cfg = _cfg("shared")
    base = SensorBaselines(cfg.baselines, cfg.threshold, 16, 1)
    base.restore({"s": _baseline(n_channels=2)})
    scorer: Any = _own_model(16, 2)  # score_reduce "mean"
    normal = np.zeros(4, dtype=bool)
    assert not base.refresh(["s"] * 3, np.full((3, 2), 100.0), normal[:3], scorer, "v0002")  # 3 of 4 under v0002
    assert not base.refresh(["s"], np.full((1, 2), 0.01), normal[:1], scorer, "v0003"), "v0003 starts again"
    (_, refit), = base.refresh(["s"] * 3, np.full((3, 2), 0.01), normal[:3], scorer, "v0003")
    assert refit.model_version == "v0003"
    np.testing.assert_allclose(refit.channel_scale, [0.01, 0.01])


@pytest.mark.parametrize(("restored", "differs"), [
    (_baseline(n_channels=3), "it has 3 channels, stream.channels has 4"),
    (Baseline(np.zeros(4), np.ones(4), np.ones(3), 1.0, "v0001", 100), "it has 3 channels, stream.channels has 4"),
    (_baseline(own=_own_model(8)), "its own model's window_size is 8, stream.window_size is 16"),
    (_baseline(own=_own_model(16, 3)), "its own model has 3 channels, stream.channels has 4"),
])
def test_a_restored_baseline_that_does_not_fit_the_stream_is_dropped_and_the_sensor_calibrates_again(
        restored: Baseline, differs: str, caplog: pytest.LogCaptureFixture) -> None:
    base = build_baselines(_cfg())
    assert base is not None
    base.restore({"old": restored, "ok": _baseline()})
    assert set(base.ready) == {"ok"}
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert warning.getMessage() == (f"sensor old: its restored baseline does not fit this worker ({differs}); "
                                    "it is dropped and the sensor calibrates again")


def test_a_worker_restoring_a_baseline_of_other_channels_calibrates_the_sensor_again(
        train_small: Any, one_model: Any, scripted_source: Any) -> None:
    cfg = _cfg("shared").replace(stream={"window_size": 4}, baselines={"n_readings": 40})
    changelog = Changelog()
    changelog.log["s"] = _baseline(n_channels=3).to_json()  # written before stream.channels changed
    worker = Worker(cfg, scripted_source([sensor_polls(0, 60, np.random.default_rng(0))]), ChangelogSink(changelog),
                    one_model(train_small(cfg, epochs=3)), changelog=changelog, clock=lambda: 0.0)
    worker.refresh_model(force=True)
    worker.on_partitions_assigned([("in", 0)])
    worker.step()
    assert worker.baselines is not None and len(worker.baselines.ready["s"].mean) == 4


@pytest.mark.parametrize("mode", ["shared", "finetune"])
def test_a_shared_baseline_of_an_earlier_model_for_another_window_size_leaves_the_sensor_to_the_serving_one(
        train_small: Any, mode: str, caplog: pytest.LogCaptureFixture) -> None:
    from stubs import Switch

    def cfg(window_size: int) -> Config:
        return _cfg(mode).replace(stream={"window_size": window_size},
                                  baselines={"n_readings": 60, "n_refresh_windows": 20, "finetune_blocking": False},
                                  kafka={"commit_interval_ms": 0})

    old, new = cfg(8), cfg(16)  # the operator changed stream.window_size and retrained; v0001 is still stored
    v1, v2 = train_small(old, epochs=3), train_small(new, epochs=3)
    v1.version, v2.version = "v0001", "v0002"
    changelog, rng = Changelog(), np.random.default_rng(0)

    class Source:
        def commit(self, *args: Any) -> bool:
            return True

    first = Worker(old, Source(), ChangelogSink(changelog), Switch({"v0001": v1}, "v0001"), changelog=changelog)
    first.refresh_model(force=True)
    first.on_partitions_assigned([("in", 0)])
    first.process(sensor_polls(0, 100, rng))
    first.commit()  # a shared baseline of v0001 (a fine-tune in the background had not finished)
    assert json.loads(changelog.log["s"])["model_version"] == "v0001"
    second = Worker(new, None, ChangelogSink(changelog), Switch({"v0001": v1, "v0002": v2}, "v0002"),
                    changelog=changelog)
    second.refresh_model(force=True)
    second.on_partitions_assigned([("in", 0)])
    stats = second.process(sensor_polls(100, 50, rng))  # used to raise: windows of 16 through a model of 8
    assert stats.windows > 0
    assert "v0001 cannot be loaded for this stream (BundleError: model v0001 was trained for" in caplog.text


def test_a_restored_sensor_that_sent_nothing_is_forgotten_when_its_partition_moves(
        train_small: Any, one_model: Any, scripted_source: Any) -> None:
    cfg = _cfg("shared").replace(stream={"window_size": 4}, baselines={"n_readings": 40})
    changelog = Changelog()
    changelog.log["quiet"] = _baseline().to_json()
    worker = Worker(cfg, scripted_source([]), ChangelogSink(changelog), one_model(train_small(cfg, epochs=3)),
                    changelog=changelog, clock=lambda: 0.0)
    worker.refresh_model(force=True)
    worker.on_partitions_assigned([("in", 0)])
    assert worker.baselines is not None and "quiet" in worker.baselines.ready
    worker.on_partitions_changed([("in", 0)])
    assert "quiet" not in worker.baselines.ready, "kept for a partition this worker no longer owns"


def test_a_calibration_that_starts_in_a_partition_s_replay_is_not_announced_again(
        train_small: Any, one_model: Any, recording_sink: Any, tmp_path: Any) -> None:
    from aestream.alerts import build_alert_stage

    cfg = _cfg("shared").replace(alerts={"enabled": True, "state_file": "none.json"},
                                 paths={"state_dir": str(tmp_path)}, baselines={"n_readings": 40})
    bundle, rng = train_small(cfg, epochs=3), np.random.default_rng(0)
    types = []
    for replayed in (0, 30):  # the readings a partition's last owner read (its replay), then the live ones
        sink = recording_sink()
        worker = Worker(cfg, None, sink, one_model(bundle), stages=[build_alert_stage(cfg)])
        worker.refresh_model(force=True)
        worker.process([r._replace(replay=r.offset < replayed) for r in sensor_polls(0, 80, rng)])
        types.append([json.loads(m.value)["type"] for m in sink.sent if m.topic == cfg.alerts.topic])
    assert types[0] == ["calibration_started", "calibration_finished"]
    assert types[1] == ["calibration_finished"], "its last owner announced its start when it read those readings"
    # unless its last owner had a baseline, which this worker cannot take (made under other stream.channels)
    changelog, sink = Changelog(), recording_sink()
    changelog.log["s"] = _baseline(n_channels=3).to_json()
    worker = Worker(cfg, None, sink, one_model(bundle), stages=[build_alert_stage(cfg)], changelog=changelog)
    worker.refresh_model(force=True)
    worker.on_partitions_assigned([("in", 0)])
    worker.process([r._replace(replay=r.offset < 30) for r in sensor_polls(0, 80, rng)])
    assert [json.loads(m.value)["type"] for m in sink.sent if m.topic == cfg.alerts.topic] == [
        "calibration_started", "calibration_finished"]
    changelog.log["quiet"] = _baseline(n_channels=3).to_json()  # dropped too, and sends nothing before it moves
    worker.on_partitions_changed([("in", 0)])
    worker.on_partitions_assigned([("in", 0)])
    worker.on_partitions_changed([("in", 0)])
    assert not worker._announce_in_replay, "nothing kept of a partition this worker no longer owns"


def _swap_setup(train_small: Any) -> tuple[Config, Any, Any]:
    """The shared-mode config of the swap tests, a good model (v1) and a one-epoch one (v2: errors ~100x as large)."""
    cfg = _cfg("shared").replace(baselines={"n_readings": 60, "n_refresh_windows": 20})
    good, poor = train_small(cfg, epochs=25), train_small(cfg, epochs=1)
    good.version, poor.version = "v1", "v2"
    return cfg, good, poor


def _in_service(sensor: str, n: int = 400) -> list[Any]:
    """``n`` records at 1 Hz of a sensor of the plant the small models learnt (``train_small``'s), in service."""
    from aestream.commands.simulate import Plant
    from aestream.stream.messages import Record

    signal = Plant(4, CHANNELS, seed=0).signal(n)[0]
    return [Record("in", 0, i, sensor.encode(), json.dumps({"sensor": sensor, "ts": START_MS + 1000 * i,
                                                            "values": signal[i].tolist()}).encode(), 0)
            for i in range(n)]


@pytest.mark.parametrize("swaps", [["v2"], ["v2", "v3"], ["v2", "v1"]])
def test_after_a_swap_to_a_much_worse_model_a_shared_baseline_is_judged_by_the_model_before_until_refitted(
        train_small: Any, recording_sink: Any, swaps: list[str]) -> None:
    """One swap; two before the sensor refits (it is judged by the model of its baseline's version); a rollback
    to the version of its baseline. A baseline restored after the swap (its partition moved here) is judged the
    same way."""
    import copy

    from stubs import Switch

    cfg, good, poor = _swap_setup(train_small)
    poorer = train_small(cfg, epochs=1, seed=1)
    poorer.version = "v3"
    records, moved = _in_service("s"), _in_service("moved")
    models, sink = Switch({"v1": good, "v2": poor, "v3": poorer}, "v1"), recording_sink()
    worker = Worker(cfg, None, sink, models)
    worker.refresh_model(force=True)
    before = worker.process(records[:200])
    base = worker.baselines
    assert base is not None
    for version in swaps:
        models.now = version
        worker.refresh_model(force=True)
    base.restore({"moved": copy.deepcopy(base.ready["s"])})  # of v1, from the changelog: its partition moved here
    after = [worker.process(records[200 + 20 * k : 220 + 20 * k] + moved[200 + 20 * k : 220 + 20 * k])
             for k in range(10)]
    assert {base.ready[s].model_version for s in ("s", "moved")} == {swaps[-1]}, "refitted from normal windows"
    assert before.events == 0 and [s.events for s in after] == [0] * 10, "normal readings: no alarm, before or after"
    assert not base._earlier and not base._by_earlier, "the models before are let go once none judges a sensor"


@pytest.mark.parametrize("stored", [True, False])
def test_a_baseline_restored_under_an_earlier_model_is_judged_by_that_model_until_it_refits(
        train_small: Any, recording_sink: Any, caplog: pytest.LogCaptureFixture, stored: bool) -> None:
    """A worker started after a retrain (serving v2) is given a partition whose sensor's baseline was fitted under v1:
    it loads v1 to judge it until it refits; a version the store no longer holds leaves it to v2 meanwhile."""
    from stubs import Switch

    cfg, good, poor = _swap_setup(train_small)
    records = _in_service("s")
    first = Worker(cfg, None, recording_sink(), Switch({"v1": good}, "v1"))
    first.refresh_model(force=True)
    first.process(records[:200])
    assert first.baselines is not None and first.baselines.ready["s"].model_version == "v1"
    changelog = Changelog()
    changelog.log["s"] = first.baselines.ready["s"].to_json()
    models = Switch({"v1": good, "v2": poor} if stored else {"v2": poor}, "v2")
    second = Worker(cfg, None, recording_sink(), models, changelog=changelog)
    second.refresh_model(force=True)
    caplog.set_level(logging.INFO, logger="aestream.worker")
    second.on_partitions_assigned([("in", 0)])
    after = [second.process(records[200 + 20 * k : 220 + 20 * k]) for k in range(10)]
    assert second.baselines is not None
    if stored:
        assert "1 restored baseline(s) of model v1 are judged by it until they refit" in caplog.text
        assert second.baselines.ready["s"].model_version == "v2", "refitted from its next normal windows"
        assert [s.events for s in after] == [0] * 10, "normal readings: no alarm"
    else:
        assert "v1 cannot be loaded for this stream (KeyError: 'v1')" in caplog.text


def test_an_unreadable_baseline_record_is_skipped_with_a_warning_and_the_others_are_restored(
        train_small: Any, one_model: Any, scripted_source: Any, caplog: pytest.LogCaptureFixture) -> None:
    cfg = _cfg().replace(stream={"window_size": 4}, baselines={"n_readings": 40, "mode": "shared"})
    bundle, changelog, rng = train_small(cfg, epochs=3), Changelog(), np.random.default_rng(0)
    _calibrated(cfg, one_model(bundle), changelog, scripted_source([sensor_polls(0, 60, rng)]))
    assert "s" in changelog.log
    changelog.log["t"] = b'{"mean": "not a baseline"}'  # another version's record, say
    second = Worker(cfg, scripted_source([]), ChangelogSink(changelog), one_model(bundle), changelog=changelog,
                    clock=lambda: 0.0)
    second.refresh_model(force=True)
    second.on_partitions_assigned([("in", 0)])
    assert second.baselines is not None and set(second.baselines.ready) == {"s"}
    assert "baseline of sensor 't' in the changelog (partition ('in', 0)) is unreadable" in caplog.text
