"""A retrain reaches the sensors judged by their own models: after a swap each is fine-tuned again from the new
shared model, on readings that are not part of a fault (the retraining stage's rule: an alarm lasting
``retrain.regime_change_after_s`` is a regime change, and learned)."""

from __future__ import annotations

import copy
import json
from collections.abc import Generator
from typing import Any

import numpy as np
import pytest
from stubs import Changelog, ChangelogSink, Switch, sensor_polls  # tests/stubs.py

from aestream.config import Config
from aestream.detect.baselines import Baseline, SensorBaselines
from aestream.detect.features import Preprocessor
from aestream.detect.scoring import Scorer
from aestream.models import build_model
from aestream.stream.windows import Window, Windower
from aestream.training.finetune import Finetuner, build_baselines
from aestream.worker import Worker

CHANNELS = ("temperature", "pressure", "vibration", "current")
START_MS = 1_767_225_600_000
SHARED_V2: Any = object()  # the new shared scorer: only handed on to the finetuner here


def _cfg(**baselines: Any) -> Config:
    return Config().replace(stream={"channels": CHANNELS, "window_size": 16, "stride": 1},
                            model={"detrend_channels": ()},
                            baselines={"mode": "finetune", "n_readings": 100, "finetune_blocking": False,
                                       "finetune_slice_ms": 0.01, **baselines},
                            kafka={"commit_interval_ms": 0})


def _own_model() -> Scorer:
    pre = Preprocessor(np.zeros(4), np.ones(4), np.zeros(4, dtype=bool))
    return Scorer(build_model("vanilla", window_size=16, n_channels=4), pre)


def _baseline(version: str, own: Scorer | None = None) -> Baseline:
    return Baseline(np.zeros(4), np.ones(4), np.ones(4), 1.0, version, 100, own)


def _windows(sensor: str, readings: np.ndarray) -> list[Window]:
    win = Windower(16, 1, 4, 10_000)
    ts = START_MS + 1000 * np.arange(len(readings))
    return [w for t, r in zip(ts.tolist(), readings) if (w := win.push(sensor, t, r)) is not None]  # type: ignore[misc]


class _Fits:
    """A finetuner's fit that keeps what it is given and makes a baseline with an own model of that version."""

    def __init__(self) -> None:
        self.given: list[tuple[list[np.ndarray], Any, str]] = []

    def __call__(self, runs: list[np.ndarray], shared: Any,
                 version: str) -> Generator[None, None, tuple[Baseline, np.ndarray]]:
        self.given.append((runs, shared, version))
        return self._steps(version)

    @staticmethod
    def _steps(version: str) -> Generator[None, None, tuple[Baseline, np.ndarray]]:
        yield
        return _baseline(version, _own_model()), np.zeros(1)


def _baselines(fits: _Fits, regime_change_after_s: float = 60.0) -> SensorBaselines:
    cfg = _cfg()
    return SensorBaselines(cfg.baselines, cfg.threshold, 16, 1, finetuner=Finetuner(fits, 8),
                           regime_change_after_s=regime_change_after_s)


def _steps(base: SensorBaselines, windows: list[Window], alarms: np.ndarray, version: str = "v0002") -> None:
    """The worker's steps of 20 windows under the shared model ``version``: split, then the scored windows' alarms."""
    for at in range(0, len(windows), 20):
        part = windows[at:at + 20]
        assert base.split(part, SHARED_V2, version).keep == list(range(len(part)))
        base.gather(part, alarms[at:at + 20], SHARED_V2, version)


def _finish(base: SensorBaselines) -> list[tuple[str, Baseline, np.ndarray]]:
    while base.background_waiting:
        base.work(1.0)
    return base.finetuned()


def test_after_a_swap_a_sensor_with_its_own_model_is_fine_tuned_again_from_the_new_shared_model() -> None:
    fits = _Fits()
    base = _baselines(fits)
    v1 = _baseline("v0001", _own_model())
    base.restore({"s": v1})
    base.ready.update({"current": _baseline("v0002", _own_model()), "shared": _baseline("v0001")})
    base.renew("v0002")
    rng = np.random.default_rng(0)
    readings = {s: rng.normal(0.0, 1.0, (300, 4)) for s in ("s", "current", "shared")}
    windows = [w for s in readings for w in _windows(s, readings[s][:150])]
    _steps(base, windows, np.zeros(len(windows), dtype=bool))
    assert base.ready["s"] is v1, "judged by its own v0001 model until its new one is done"
    (runs, shared, version), = fits.given  # only the sensor with an own model of another version
    assert shared is SHARED_V2 and version == "v0002"
    np.testing.assert_array_equal(np.concatenate(runs), readings["s"][:100].astype(np.float32))
    (sensor, renewed, _), = _finish(base)
    assert sensor == "s" and base.ready["s"] is renewed
    assert renewed.model_version == "v0002" and renewed.scorer is not None
    later = _windows("s", readings["s"])[150:]
    _steps(base, later, np.zeros(len(later), dtype=bool))
    assert len(fits.given) == 1, "fine-tuned once"


def _faulty(kind: str, fits: _Fits) -> SensorBaselines:
    base = _baselines(fits)
    if kind == "renewing":
        base.restore({"s": _baseline("v0001", _own_model())})
        base.renew("v0002")
    else:
        base.restore({"s": _baseline("v0001")})  # restored without its own model: the shared model judges it
    return base


@pytest.mark.parametrize("kind", ["renewing", "restored without its own model"])
def test_an_alarm_shorter_than_a_regime_change_restarts_the_gathering_and_its_readings_are_not_learned(
        kind: str) -> None:
    fits = _Fits()
    base = _faulty(kind, fits)
    readings = np.random.default_rng(1).normal(0.0, 1.0, (300, 4))
    readings[70:80] += 50.0  # a 10 s fault: its windows (ending at readings 70..94) alarm for 25 s < 60 s
    windows = _windows("s", readings)
    ends = np.array([(w.end_ms - START_MS) // 1000 for w in windows])
    _steps(base, windows, (ends >= 70) & (ends <= 94))
    (runs, _, version), = fits.given
    assert version == "v0002"
    # the 70 readings gathered before the fault are dropped; the gathering restarts with the first normal window
    np.testing.assert_array_equal(np.concatenate(runs), readings[80:180].astype(np.float32))


def test_two_faults_with_a_normal_window_between_are_two_short_alarms_not_a_regime_change() -> None:
    fits = _Fits()
    base = _faulty("renewing", fits)
    readings = np.random.default_rng(2).normal(0.0, 1.0, (300, 4))
    windows = _windows("s", readings)
    ends = np.array([(w.end_ms - START_MS) // 1000 for w in windows])
    alarms = (ends >= 20) & (ends <= 119) & (ends != 70)  # 50 s, one normal window, 49 s: neither reaches 60 s
    _steps(base, windows, alarms)
    (runs, _, _), = fits.given
    np.testing.assert_array_equal(np.concatenate(runs), readings[105:205].astype(np.float32))


def test_an_alarm_lasting_regime_change_after_s_is_taken_for_a_regime_change_and_learned() -> None:
    fits = _Fits()
    base = _baselines(fits, regime_change_after_s=30.0)
    base.restore({"s": _baseline("v0001", _own_model())})
    base.renew("v0002")
    readings = np.random.default_rng(3).normal(0.0, 1.0, (300, 4))
    readings[60:] += 10.0  # the new regime, which the old model flags in every window from reading 60 on
    windows = _windows("s", readings)
    ends = np.array([(w.end_ms - START_MS) // 1000 for w in windows])
    _steps(base, windows, ends >= 60)
    (runs, _, version), = fits.given
    # 30 s after its first alarm (the window ending at reading 90) its windows are gathered again
    assert version == "v0002"
    np.testing.assert_array_equal(np.concatenate(runs), readings[75:175].astype(np.float32))


def test_a_fine_tune_of_an_older_version_or_a_baseline_restored_under_one_is_renewed_too() -> None:
    fits = _Fits()
    base = _baselines(fits)
    base.renew("v0001")
    base.restore({"late": _baseline("v0001")})  # its fine-tune (from v0001) is under way when v0002 comes
    readings = np.random.default_rng(4).normal(0.0, 1.0, (400, 4))
    _steps(base, _windows("late", readings[:120]), np.zeros(105, dtype=bool), "v0001")
    assert [v for _, _, v in fits.given] == ["v0001"]
    base.renew("v0002")
    base.restore({"moved": _baseline("v0001", _own_model())})  # a partition moved here after the swap
    (_, done, _), = _finish(base)
    assert done.model_version == "v0001" and base.ready["late"] is done, "better than none meanwhile"
    windows = _windows("late", readings[120:]) + _windows("moved", readings[120:])
    _steps(base, windows, np.zeros(len(windows), dtype=bool))
    assert sorted(v for _, _, v in fits.given[1:]) == ["v0002", "v0002"]
    assert {s: b.model_version for s, b, _ in _finish(base)} == {"late": "v0002", "moved": "v0002"}


@pytest.mark.parametrize("mode", ["blocking", "shared"])
def test_without_a_background_finetuner_a_swap_renews_nothing(mode: str) -> None:
    cfg = _cfg(finetune_blocking=True) if mode == "blocking" else _cfg(mode="shared")
    base = build_baselines(cfg)
    assert base is not None
    own = _baseline("v0001", _own_model())
    if mode == "shared":  # a model of its own is not taken: the sensor calibrates again, on the shared model
        assert base.restore({"s": own}) == {}
        return
    base.restore({"s": own})
    base.renew("v0002")
    windows = _windows("s", np.random.default_rng(5).normal(0.0, 1.0, (200, 4)))
    _steps(base, windows, np.zeros(len(windows), dtype=bool))
    assert base.ready["s"] is own and not base.background_waiting and not base.finetuned()


def _logged(changelog: Changelog) -> dict[str, Any]:
    return json.loads(changelog.log["s"])  # type: ignore[no-any-return]


def test_through_a_worker_a_swap_writes_the_sensor_s_re_fine_tuned_baseline_to_the_changelog(
        train_small: Any, one_model: Any, scripted_source: Any) -> None:
    cfg = _cfg(n_readings=40).replace(stream={"window_size": 4})
    one = one_model(train_small(cfg, epochs=3)).bundle  # v0001
    two = copy.deepcopy(one)
    two.version = "v0002"
    models, changelog, rng = Switch({"v0001": one, "v0002": two}, "v0001"), Changelog(), np.random.default_rng(0)
    source = scripted_source([sensor_polls(0, 60, rng)])
    worker = Worker(cfg, source, ChangelogSink(changelog), models, changelog=changelog, clock=lambda: 0.0)
    worker.refresh_model(force=True)
    worker.on_partitions_assigned([("in", 0)])
    base = worker.baselines
    assert base is not None
    for _ in range(10_000):  # calibrated, then fine-tuned from v0001 in the background
        worker.step()
        if not base.background_waiting and base.ready.get("s") and base.ready["s"].scorer is not None:
            break
    worker.step()  # its commit
    assert _logged(changelog)["model_version"] == "v0001" and "model" in _logged(changelog)
    models.now = "v0002"
    worker.refresh_model(force=True)
    own_v1 = base.ready["s"]
    source.polls.append(sensor_polls(60, 200, rng))
    worker.step()
    assert base.ready["s"] is own_v1, "judged by its own v0001 model while its next readings are gathered"
    for _ in range(10_000):
        if not base.background_waiting:
            break
        worker.step()
    worker.step()  # its commit
    assert base.ready["s"].model_version == "v0002" and base.ready["s"].scorer is not None
    logged = _logged(changelog)
    assert logged["model_version"] == "v0002" and "model" in logged, "the re-fine-tuned baseline, written"
