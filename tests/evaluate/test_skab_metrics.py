"""The SKAB scorer on hand-made cases (no benchmark data needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aestream.commands.evaluate.metrics import (
    NAB_PROFILES,
    Confusion,
    binary_scores,
    changepoint_edges,
    confusion,
    detection_delays,
    detection_windows,
    match_changepoints,
    nab_reward,
    nab_score,
)
from aestream.commands.evaluate.skab import FileResult, skab_metrics

PROFILES = list(NAB_PROFILES)


def _tanh_reward(k: int, a_tp: float, a_fp: float) -> float:
    x = -math.pi / 2 + math.pi * k / 999
    return a_fp + (a_tp - a_fp) / 2 * (1 - math.tanh(x) / math.tanh(math.pi / 2))


def test_f1_far_mar_on_small_arrays() -> None:
    true = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 0])
    pred = np.array([0, 1, 0, 0, 0, 1, 1, 1, 1, 0])
    c = confusion(true, pred)
    assert c == Confusion(tp=3, tn=4, fp=2, fn=1)
    f1, far, mar = binary_scores(c)
    assert f1 == pytest.approx(3 / (3 + 3 / 2))
    assert far == pytest.approx(100 * 2 / 6)
    assert mar == pytest.approx(100 * 1 / 4)


def test_counts_pool_over_files_before_dividing() -> None:
    a = confusion(np.array([1, 1, 0]), np.array([1, 1, 0]))
    b = confusion(np.array([1, 0, 0, 0]), np.array([0, 1, 1, 1]))
    f1, far, mar = binary_scores(a + b)
    assert (a + b) == Confusion(tp=2, tn=1, fp=3, fn=1)
    assert f1 == pytest.approx(2 / (2 + 2)) and far == pytest.approx(75.0) and mar == pytest.approx(100 / 3)


def test_confusion_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        confusion(np.array([0, 1]), np.array([0, 1, 1]))


def test_all_ones_detector_has_far_100_mar_0_and_one_changepoint() -> None:
    true = np.array([0, 0, 1, 1, 1, 0])
    pred = np.ones(6, dtype=int)
    _, far, mar = binary_scores(confusion(true, pred))
    assert (far, mar) == (100.0, 0.0)
    assert changepoint_edges(pred).tolist() == [1, 0, 0, 0, 0, 0]


def test_changepoints_are_rising_and_falling_edges() -> None:
    assert changepoint_edges(np.array([0, 1, 1, 0, 0, 1])).tolist() == [0, 1, 0, 1, 0, 1]
    assert changepoint_edges(np.array([], dtype=int)).tolist() == []


@pytest.mark.parametrize("profile", PROFILES)
def test_null_detector_scores_zero(profile: str) -> None:
    m = match_changepoints(np.array([100.0, 400.0]), np.array([]), width=60.0)
    assert m.first_detection == [None, None] and m.n_false_positives == 0
    assert nab_score([m], profile) == 0.0


@pytest.mark.parametrize("profile", PROFILES)
def test_perfect_detector_scores_hundred(profile: str) -> None:
    cps = np.array([100.0, 400.0, 700.0])
    assert nab_score([match_changepoints(cps, cps, width=60.0)], profile) == pytest.approx(100.0)


def test_reward_is_read_off_a_1000_point_grid() -> None:
    a_tp, a_fp = NAB_PROFILES["standard"][:2]
    assert nab_reward(0.0, a_tp, a_fp) == pytest.approx(a_tp)
    assert nab_reward(0.0009, a_tp, a_fp) == pytest.approx(a_tp)  # k = 0
    assert nab_reward(0.5, a_tp, a_fp) == pytest.approx(_tanh_reward(500, a_tp, a_fp))
    assert nab_reward(0.5, a_tp, a_fp) < (a_tp + a_fp) / 2  # grid point 500 lies just right of the middle
    assert nab_reward(0.25, a_tp, a_fp) == pytest.approx(_tanh_reward(250, a_tp, a_fp))
    assert nab_reward(0.9995, a_tp, a_fp) == pytest.approx(a_fp)  # k = min(999, 999)
    assert nab_reward(1.0, a_tp, a_fp) == pytest.approx(a_fp)  # k = 1000 clipped to 999


def test_nab_score_of_one_detection_mid_window() -> None:
    m = match_changepoints(np.array([0.0]), np.array([15.0]), width=60.0)  # u = 0.25
    s = _tanh_reward(250, 1.0, -0.11)
    assert nab_score([m], "standard") == pytest.approx(100 * (s + 1) / 2)


def test_predictions_outside_windows_are_false_positives_and_later_ones_inside_ignored() -> None:
    m = match_changepoints(np.array([100.0]), np.array([5.0, 110.0, 120.0, 160.0, 161.0]), width=60.0)
    assert m.first_detection == [110.0]
    assert m.n_false_positives == 2  # 5 before, 161 after; 160 is the window's (inclusive) right end
    s = _tanh_reward(166, 1.0, -0.11) + 2 * -0.11
    assert nab_score([m], "standard") == pytest.approx(100 * (s + 1) / 2)
    lowfp = _tanh_reward(166, 1.0, -0.22) + 2 * -0.22
    assert nab_score([m], "lowfp") == pytest.approx(100 * (lowfp + 1) / 2)
    lowfn = _tanh_reward(166, 1.0, -0.11) + 2 * -0.11
    assert nab_score([m], "lowfn") == pytest.approx(100 * (lowfn + 2) / 3)


def test_overlapping_windows_are_cut_on_the_right() -> None:
    assert detection_windows(np.array([0.0, 30.0, 200.0]), 60.0) == [(0.0, 60.0), (60.0, 90.0), (200.0, 260.0)]


def test_a_prediction_on_the_instant_two_windows_share_is_first_detection_of_both() -> None:
    m = match_changepoints(np.array([0.0, 60.0]), np.array([60.0]), width=60.0)
    assert m.windows == [(0.0, 60.0), (60.0, 120.0)]
    assert m.first_detection == [60.0, 60.0] and m.n_false_positives == 0
    s = -0.11 + 1.0  # end of the first window (A_fp), start of the second (A_tp)
    assert nab_score([m], "standard") == pytest.approx(100 * (s + 2) / 4)


def test_nab_pools_raw_scores_over_files() -> None:
    hit = match_changepoints(np.array([0.0]), np.array([0.0]), 60.0)
    miss = match_changepoints(np.array([0.0]), np.array([]), 60.0)
    no_cp = match_changepoints(np.array([]), np.array([3.0]), 60.0)
    assert no_cp.n_false_positives == 1
    assert nab_score([hit, miss], "standard") == pytest.approx(50.0)
    assert nab_score([hit, miss, no_cp], "standard") == pytest.approx(100 * (1 - 1 - 0.11 + 2) / 4)


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown NAB profile 'strict'"):
        nab_score([], "strict")


def test_detection_delay_is_time_from_window_start_to_first_detection() -> None:
    ms = [match_changepoints(np.array([0.0, 200.0]), np.array([12.0, 30.0, 230.0]), 60.0),
          match_changepoints(np.array([50.0]), np.array([]), 60.0)]
    assert detection_delays(ms) == [12.0, 30.0]


def _file(pred: list[int], anomaly: list[int], changepoint: list[int]) -> FileResult:
    times = np.datetime64("2020-03-09T10:00:00", "ns") + np.arange(len(pred)) * np.timedelta64(1, "s")
    return FileResult("f", times, np.array(anomaly), np.array(changepoint), np.zeros(len(pred)), 1.0,
                      np.array(pred))


def test_skab_metrics_report_exactly_the_documented_keys_in_seconds() -> None:
    anomaly = [0] * 10 + [1] * 10 + [0] * 10
    cp = [0] * 10 + [1] + [0] * 19
    m = skab_metrics([_file([0] * 13 + [1] * 7 + [0] * 10, anomaly, cp)])
    assert set(m) == {"f1", "far", "mar", "nab_standard", "nab_lowfp", "nab_lowfn", "mean_delay_s", "files"}
    assert (m["far"], m["mar"]) == (0.0, 30.0)
    assert m["mean_delay_s"] == 3.0
    assert m["files"][0]["tp"] == 7


def test_skab_metrics_of_all_ones_and_null_detectors() -> None:
    anomaly = [0] * 10 + [1] * 10 + [0] * 10
    cp = [0] * 10 + [1] + [0] * 19
    ones = skab_metrics([_file([1] * 30, anomaly, cp)])
    assert (ones["far"], ones["mar"]) == (100.0, 0.0) and ones["mean_delay_s"] is None
    null = skab_metrics([_file([0] * 30, anomaly, cp)])
    assert (null["nab_standard"], null["nab_lowfp"], null["nab_lowfn"]) == (0.0, 0.0, 0.0)


def test_a_file_without_a_threshold_reports_null_so_the_json_parses_everywhere() -> None:
    """A file whose stream brought no event has no threshold known (NaN): --json printed a bare NaN, which strict
    parsers (JavaScript's, Go's, Python's with parse_constant) refuse."""
    import dataclasses
    import json

    anomaly = [0] * 10 + [1] * 10 + [0] * 10
    none_known = dataclasses.replace(_file([0] * 30, anomaly, [0] * 10 + [1] + [0] * 19), threshold=float("nan"))
    m = skab_metrics([none_known])
    assert m["files"][0]["threshold"] is None
    json.dumps(m, allow_nan=False)
