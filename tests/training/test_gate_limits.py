"""The gate's limits: the false-alarm ceiling and the recall tolerance hold at their edges, and recall is compared
only where it is evidence (the windows a model judged normal, against a current model that is a reference)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from aestream.commands.simulate import Plant
from aestream.config import Config
from aestream.models.bundle import ModelBundle
from aestream.training.fit import sliding_windows
from aestream.training.gate import detection_rate, gate_reason, run_gate

CHANNELS = ("temperature", "pressure", "vibration", "current")
CFG = Config().replace(stream={"channels": CHANNELS, "window_size": 16, "stride": 4}, model={"detrend_channels": ()})


def _holdout() -> np.ndarray:
    """388 windows of the plant's readings after those train_small fitted on."""
    plant = Plant(4, CHANNELS, seed=0)
    plant.signal(800)
    return np.concatenate([sliding_windows(s, 16, 4) for s in plant.signal(400, step0=800)])


def _alarming_on_half(bundle: ModelBundle, holdout: np.ndarray) -> ModelBundle:
    half = copy.copy(bundle)
    half.threshold = float(np.median(bundle.scorer.score(holdout).scores))
    return half


def test_a_false_alarm_rate_just_over_gate_max_far_is_refused_naming_the_key() -> None:
    assert gate_reason(1.0, 1.0, 0.01, tolerance=0.0, max_far=0.01) is None
    assert gate_reason(1.0, 1.0, 0.011, tolerance=0.0, max_far=0.01) == (
        "false-alarm rate 0.0110 on the held-out slice exceeds retrain.gate_max_far = 0.01")


def test_a_recall_drop_just_beyond_the_tolerance_is_refused() -> None:
    recall = {"tolerance": 0.0, "max_far": 0.01, "current_recall": 0.9, "recall_tolerance": 0.05}
    assert gate_reason(1.0, 1.0, 0.0, candidate_recall=0.86, **recall) is None
    assert gate_reason(1.0, 1.0, 0.0, candidate_recall=0.84, **recall) == (
        "catches 84.0 % of the synthetic faults on the held-out slice, the current model 90.0 % (tolerance 5 points)")


def test_a_current_model_alarming_on_more_than_gate_max_far_is_no_recall_reference(train_small: Any) -> None:
    bundle, holdout = train_small(CFG), _holdout()
    result = run_gate(bundle, _alarming_on_half(bundle, holdout), holdout, tolerance=10.0, max_far=0.05)
    assert result.current_far == 0.5 and result.current_recall is None


def test_recall_counts_only_the_windows_the_model_judged_normal_before_the_fault(train_small: Any) -> None:
    holdout = _holdout()
    half = _alarming_on_half(train_small(CFG), holdout)
    # no fault injected: of the windows it judged normal none is caught; the half it alarmed on are no evidence
    assert detection_rate(half, holdout, holdout) == 0.0
