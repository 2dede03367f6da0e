"""Window preprocessing shared by training and scoring: per-channel standardisation and optional detrending.

Detrended channels have each window's own mean removed after standardisation, so a slowly drifting channel
(a temperature) is judged on its shape within the window, not on its level.

>>> p = Preprocessor(mean=np.array([1.0, 0.0]), std=np.array([2.0, 1.0]), detrend=np.array([False, True]))
>>> p(np.array([[[3.0, 5.0], [5.0, 7.0]]], dtype=np.float32)).tolist()
[[[1.0, -1.0], [2.0, 1.0]]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Preprocessor"]

_MIN_STD = 1e-6


@dataclass(frozen=True)
class Preprocessor:
    """Standardises ``(B, W, C)`` windows channel by channel; detrends the flagged channels."""

    mean: np.ndarray
    std: np.ndarray
    detrend: np.ndarray

    @classmethod
    def fit(cls, readings: np.ndarray, channels: Sequence[str], detrend_channels: Sequence[str] = ()) -> Preprocessor:
        """Fit on raw readings ``(N, C)``."""
        unknown = set(detrend_channels) - set(channels)
        if unknown:
            raise ValueError(f"detrend channel(s) {sorted(unknown)} are not among the channels {list(channels)}")
        x = np.asarray(readings, dtype=np.float64)
        return cls(x.mean(axis=0), np.maximum(x.std(axis=0), _MIN_STD),
                   np.array([c in detrend_channels for c in channels]))

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        x = ((windows - self.mean) / self.std).astype(np.float32)
        if self.detrend.any():
            x[:, :, self.detrend] -= x[:, :, self.detrend].mean(axis=1, keepdims=True)
        return x

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "detrend": self.detrend.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        return cls(np.array(d["mean"], dtype=np.float64), np.array(d["std"], dtype=np.float64),
                   np.array(d["detrend"], dtype=bool))
