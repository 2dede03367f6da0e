from __future__ import annotations

import numpy as np
import pytest

from aestream.config import ThresholdConfig
from aestream.detect.thresholds import AlarmRule, calibrate_threshold, pot_threshold, quantile_threshold


def test_pot_recovers_an_exponential_tail_quantile() -> None:
    scores = np.random.default_rng(0).exponential(1.0, 200_000)
    # P(X > t) = 1e-4 for an exponential(1) at t = ln(1e4) ≈ 9.21, beyond every empirical quantile it was fit on
    assert pot_threshold(scores, target_far=1e-4, initial_quantile=0.98) == pytest.approx(np.log(1e4), rel=0.05)


def test_pot_falls_back_to_the_quantile_when_the_tail_is_too_thin() -> None:
    scores = np.arange(20.0)
    assert pot_threshold(scores, target_far=0.1) == pytest.approx(np.quantile(scores, 0.9))


def test_calibration_uses_the_configured_method() -> None:
    scores = np.random.default_rng(1).normal(size=10_000)
    q = calibrate_threshold(scores, ThresholdConfig(method="quantile", quantile=0.99, factor=1.5))
    assert q == pytest.approx(1.5 * quantile_threshold(scores, 0.99))
    pot = calibrate_threshold(scores, ThresholdConfig(method="pot", target_far=0.001))
    assert 2.5 < pot < 4.0


def test_alarm_rule_streaming_and_batch_agree() -> None:
    scores = np.random.default_rng(2).normal(1.0, 0.6, 500)
    rule = AlarmRule(threshold=1.3, k=2, n=4, smoothing=3)
    streamed = [rule.update("s", float(x))[1] for x in scores]
    batch = AlarmRule(threshold=1.3, k=2, n=4, smoothing=3).apply(scores)
    assert streamed == batch.tolist()
    assert 0 < sum(streamed) < len(scores)


def test_per_sensor_factors_raise_the_threshold_of_matching_sensors_only() -> None:
    rule = AlarmRule(threshold=1.0, sensor_factors={"pump-*": 3.0})
    assert rule.update("pump-1", 2.0) == (2.0, False)  # 2.0 < 3.0 × 1.0
    assert rule.update("fan-1", 2.0) == (2.0, True)
    assert (rule.threshold_for("pump-1"), rule.threshold_for("fan-1")) == (3.0, 1.0)


@pytest.mark.parametrize("smoothing,k,n", [(1, 1, 1), (3, 2, 4), (5, 3, 20), (2, 1, 1), (4, 10, 70)])
def test_update_many_equals_update_one_by_one_across_any_split(smoothing: int, k: int, n: int) -> None:
    rng = np.random.default_rng(smoothing * 100 + n)
    scores = rng.exponential(1.0, 300)
    scores[[10, 11, 150]] = np.finfo(np.float32).max  # a capped score must not swamp the windows after it
    one = AlarmRule(1.0, k=k, n=n, smoothing=smoothing, sensor_factors={"s*": 1.2})
    many = AlarmRule(1.0, k=k, n=n, smoothing=smoothing, sensor_factors={"s*": 1.2})
    expected = [one.update("s1", float(x)) for x in scores]
    got: list[tuple[float, bool]] = []
    for part in np.split(scores, [1, 2, 7, 40, 41, 200]):
        smoothed, alarms = many.update_many("s1", part)
        got.extend(zip(smoothed.tolist(), alarms.tolist()))
    assert [a for _, a in got] == [a for _, a in expected]
    assert np.allclose([s for s, _ in got], [s for s, _ in expected], rtol=1e-12)
    assert 0 < sum(a for _, a in got) < len(scores)


def test_a_rule_with_the_same_k_n_and_smoothing_carries_each_sensors_state_over() -> None:
    old = AlarmRule(1.0, k=2, n=3, smoothing=2)
    for x in (0.0, 3.0, 3.0):
        old.update("s", x)
    new = AlarmRule(2.0, k=2, n=3, smoothing=2)  # a new model, its threshold twice the old one
    assert new.carry(old)
    # the smoothing window holds 3.0 (ratio 3 to the old threshold) as 6.0: one window at ratio 1.5 is enough
    assert new.update("s", 2.2) == (pytest.approx(4.1), True)
    fresh = AlarmRule(2.0, k=2, n=3, smoothing=2)
    assert fresh.update("s", 2.2)[1] is False  # what a reset did: the episode in progress closed at the swap


@pytest.mark.parametrize("changed", [{"k": 1}, {"n": 4}, {"smoothing": 1}])
def test_a_rule_with_other_k_n_or_smoothing_starts_afresh(changed: dict[str, int]) -> None:
    old = AlarmRule(1.0, k=2, n=3, smoothing=2)
    old.update("s", 3.0)
    new = AlarmRule(1.0, **{"k": 2, "n": 3, "smoothing": 2, **changed})
    assert not new.carry(old) and new.update("s", 0.0) == (0.0, False)


def test_the_threshold_is_calibrated_on_the_scores_smoothed_as_the_rule_smooths_them() -> None:
    scores = np.tile([0.0, 0.0, 0.0, 0.0, 10.0], 20)  # every trailing mean of 5 from the 5th on is 2.0
    assert calibrate_threshold(scores, ThresholdConfig(quantile=0.5, factor=1.0, smoothing=5)) == 2.0
    assert calibrate_threshold(scores, ThresholdConfig(quantile=0.5, factor=1.0, smoothing=1)) == 0.0


def test_a_dropped_sensor_is_judged_by_the_shared_threshold_again() -> None:
    rule = AlarmRule(threshold=1.0)
    rule.set_threshold("s", 9.0)
    rule.set_threshold("other", 2.0)
    assert rule.update("s", 5.0) == (5.0, False)
    rule.drop(["s"])
    assert rule.threshold_for("s") == 1.0
    assert rule.update("s", 5.0) == (5.0, True)


def test_the_states_a_commit_carries_are_those_of_sensors_with_a_crossing_among_their_last_n() -> None:
    def rule() -> AlarmRule:
        return AlarmRule(1.0, k=2, n=3, smoothing=2)

    whole = rule()
    whole.update_many("a", np.array([0.0, 5.0, 0.0]))  # smoothed 0, 2.5, 2.5: the last two crossed
    whole.update("b", 0.0)
    whole.update_many("c", np.array([5.0, 0.0, 0.0, 0.0, 0.0]))  # its crossings shifted out
    assert whole.states() == {"a": (0b011, (0.0,))} and whole.states(limit=0) is None
    swapped = AlarmRule(2.0, k=2, n=3, smoothing=2)
    assert swapped.carry(whole) and swapped.states() == {"a": (0b011, (0.0,))}
    rebuilt = rule()
    rebuilt.update_many("a", np.array([0.0]))  # what a replay of its last window alone rebuilt
    rebuilt.restore(whole.states() or {}, ["a", "b"])
    assert rebuilt.update("a", 0.0) == whole.update("a", 0.0) == (0.0, True)  # held on: 2 of its last 3
    whole.drop(["a"])
    assert whole.states() == {}
