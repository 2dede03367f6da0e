"""Training's time-ordered split: no window both trains and validates, also on segments of one or two windows
(readings cut by frequent gaps), and the input scaling is fitted on the readings that train alone."""

from __future__ import annotations

import numpy as np
import pytest

from aestream.errors import DataError
from aestream.training.fit import fit_scorer


def test_short_segments_give_no_window_that_both_trains_and_validates() -> None:
    rng = np.random.default_rng(0)
    segments = [rng.normal(size=(n, 2)) for n in (16, 17, 16, 17, 40)]  # window 16: 1, 2, 1, 2 and 25 windows
    result = fit_scorer(segments, ("a", "b"), window_size=16, family="vanilla", latent_size=2, hidden_size=8,
                        epochs=1, device="cpu", torch_threads=1, validation_fraction=0.2)
    m = result.metrics
    assert m["n_train_windows"] + m["n_val_windows"] == 31, m
    assert m["n_val_windows"] == 1 + 1 + 5, "a segment of two windows validates on its second"


def test_the_input_scaling_is_fitted_on_the_readings_the_training_windows_span() -> None:
    # the last readings (the validation windows' own) sit far off: fitted on them too, the scaling moves toward them
    rng = np.random.default_rng(1)
    segment = rng.normal(size=(60, 2))
    segment[45:] += 50.0
    result = fit_scorer([segment], ("a", "b"), window_size=8, family="vanilla", latent_size=2, hidden_size=8,
                        epochs=1, device="cpu", torch_threads=1, validation_fraction=0.3)
    pre = result.scorer.preprocessor
    n_train = result.metrics["n_train_windows"]  # 53 windows: 37 train, spanning the first 37 + 7 readings
    assert n_train == 37 and result.metrics["n_val_windows"] == 16
    np.testing.assert_allclose(pre.mean, segment[:n_train + 7].mean(axis=0))
    np.testing.assert_allclose(pre.std, segment[:n_train + 7].std(axis=0))


def test_a_validation_loss_that_is_not_finite_stops_training() -> None:
    """No epoch could improve on an infinite validation loss: the untrained weights were kept, the channel scales
    came out infinite and the threshold NaN, and ``aestream train`` published a model that never alarms."""
    rng = np.random.default_rng(0)
    t = np.arange(600)
    seg = np.stack([np.sin(t / 5), np.cos(t / 7)], 1) + 0.05 * rng.standard_normal((600, 2))
    seg[550, 0] = 9.9e37  # an instrument's overload value, in the validation part alone
    with pytest.raises(DataError, match="validation loss became inf at epoch 1"):
        fit_scorer([seg], ("a", "b"), window_size=8, family="vanilla", latent_size=2, hidden_size=8, epochs=3,
                   device="cpu", torch_threads=1)
