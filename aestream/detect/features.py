"""Window preprocessing shared by training and scoring: per-channel standardisation, optional smoothing and
detrending.

Detrended channels have each window's own mean removed after standardisation, so a slowly drifting channel
(a temperature) is judged on its shape within the window, not on its level. With ``smooth > 1`` every channel is
replaced, inside each window, by its trailing mean over ``smooth`` readings (the window's first readings average
what the window holds): sample noise of a noisy or quantised sensor shrinks, while a shift of its level stays, so
the autoencoder's error speaks of the level rather than the noise.

>>> p = Preprocessor(mean=np.array([1.0, 0.0]), std=np.array([2.0, 1.0]), detrend=np.array([False, True]))
>>> p(np.array([[[3.0, 5.0], [5.0, 7.0]]], dtype=np.float32)).tolist()
[[[1.0, -1.0], [2.0, 1.0]]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Preprocessor", "trailing_mean"]

_MIN_STD = 1e-6


@dataclass(frozen=True)
class Preprocessor:
    """Standardises ``(B, W, C)`` windows channel by channel; detrends the flagged channels."""

    mean: np.ndarray
    std: np.ndarray
    detrend: np.ndarray
    smooth: int = 1

    @classmethod
    def fit(
        cls, readings: np.ndarray, channels: Sequence[str], detrend_channels: Sequence[str] = (), smooth: int = 1
    ) -> Preprocessor:
        """Fit on raw readings ``(N, C)``."""
        unknown = set(detrend_channels) - set(channels)
        if unknown:
            raise ValueError(f"detrend channel(s) {sorted(unknown)} are not among the channels {list(channels)}")
        if smooth < 1:
            raise ValueError(f"input smoothing span {smooth!r} is invalid: use 1 (off) or more readings")
        x = np.asarray(readings, dtype=np.float64)
        return cls(x.mean(axis=0), np.maximum(x.std(axis=0), _MIN_STD),
                   np.array([c in detrend_channels for c in channels]), int(smooth))

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        x = ((windows - self.mean) / self.std).astype(np.float32)
        if self.smooth > 1:
            x = trailing_mean(x, self.smooth)
        if self.detrend.any():
            x[:, :, self.detrend] -= x[:, :, self.detrend].mean(axis=1, keepdims=True)
        return x

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "detrend": self.detrend.tolist(),
                "smooth": self.smooth}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        return cls(np.array(d["mean"], dtype=np.float64), np.array(d["std"], dtype=np.float64),
                   np.array(d["detrend"], dtype=bool), int(d.get("smooth", 1)))


def trailing_mean(windows: np.ndarray, span: int) -> np.ndarray:
    """Trailing mean over ``span`` readings along the time axis of ``(B, W, C)`` windows, inside each window.

    >>> trailing_mean(np.array([[[0.0], [2.0], [4.0], [6.0]]], dtype=np.float32), 2)[0, :, 0].tolist()
    [0.0, 1.0, 3.0, 5.0]
    """
    x = np.asarray(windows, dtype=np.float64)
    c = np.cumsum(x, axis=1)
    idx = np.arange(x.shape[1])
    start = np.maximum(idx - span + 1, 0)
    total = c - np.take(np.concatenate([np.zeros_like(c[:, :1]), c], axis=1), start, axis=1)
    return (total / (idx - start + 1)[None, :, None]).astype(np.float32)
