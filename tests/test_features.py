"""Window preprocessing against a float64 reference written the plain way (standardise, trailing mean, detrend)."""

from __future__ import annotations

import numpy as np
import pytest

from aestream.detect.features import Preprocessor


def _reference(p: Preprocessor, windows: np.ndarray) -> np.ndarray:
    x = (np.asarray(windows, dtype=np.float64) - p.mean) / p.std
    out = np.empty_like(x)
    for t in range(x.shape[1]):
        out[:, t] = x[:, max(0, t - p.smooth + 1) : t + 1].mean(axis=1)
    out[:, :, p.detrend] -= out[:, :, p.detrend].mean(axis=1, keepdims=True)
    return out


@pytest.mark.parametrize("smooth", [1, 2, 5, 50])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_preprocessing_matches_the_float64_reference(smooth: int, dtype: type) -> None:
    rng = np.random.default_rng(smooth)
    level = np.array([1.0, 1e5, -300.0, 0.02, 50.0])  # a pressure in Pa next to a small current: large offsets
    channels = ["a", "b", "c", "d", "e"]
    p = Preprocessor.fit(level + rng.normal(size=(500, 5)) * level * 1e-3, channels, ["b", "e"], smooth=smooth)
    windows = (level + rng.normal(size=(64, 24, 5)) * level * 1e-3).astype(dtype)
    got = p(windows)
    assert got.dtype == np.float32 and got.shape == windows.shape
    np.testing.assert_allclose(got, _reference(p, windows), rtol=1e-5, atol=2e-5)


def test_read_only_and_strided_windows_are_accepted() -> None:
    series = np.random.default_rng(0).normal(size=(100, 3))
    windows = np.lib.stride_tricks.sliding_window_view(series, 10, axis=0).transpose(0, 2, 1)  # read-only view
    p = Preprocessor.fit(series, ["x", "y", "z"], ["y"], smooth=3)
    np.testing.assert_allclose(p(windows), _reference(p, windows), rtol=1e-5, atol=1e-5)
