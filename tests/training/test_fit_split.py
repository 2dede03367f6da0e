"""Training's time-ordered split: no window both trains and validates, also on segments of one or two windows
(readings cut by frequent gaps)."""

from __future__ import annotations

import numpy as np

from aestream.training.fit import fit_scorer


def test_short_segments_give_no_window_that_both_trains_and_validates() -> None:
    rng = np.random.default_rng(0)
    segments = [rng.normal(size=(n, 2)) for n in (16, 17, 16, 17, 40)]  # window 16: 1, 2, 1, 2 and 25 windows
    result = fit_scorer(segments, ("a", "b"), window_size=16, family="vanilla", latent_size=2, hidden_size=8,
                        epochs=1, device="cpu", torch_threads=1, validation_fraction=0.2)
    m = result.metrics
    assert m["n_train_windows"] + m["n_val_windows"] == 31, m
    assert m["n_val_windows"] == 1 + 1 + 5, "a segment of two windows validates on its second"
