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
>>> q = Preprocessor(mean=np.zeros(1), std=np.ones(1), detrend=np.zeros(1, dtype=bool), smooth=2)
>>> q(np.array([[[0.0], [2.0], [4.0], [6.0]]], dtype=np.float32))[0, :, 0].tolist()  # the first step averages one
[0.0, 1.0, 3.0, 5.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["Preprocessor", "standardise"]

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
        """Model input ``(B, W, C)`` float32 of raw windows ``(B, W, C)``."""
        return self.array(windows)

    def tensor(self, windows: np.ndarray, mean: np.ndarray | None = None,
               std: np.ndarray | None = None) -> torch.Tensor:
        """:meth:`array` as a CPU tensor (sharing its memory)."""
        return torch.from_numpy(self.array(windows, mean, std))

    def array(self, windows: np.ndarray, mean: np.ndarray | None = None,
              std: np.ndarray | None = None) -> np.ndarray:
        """Model input ``(B, W, C)`` float32 of raw windows ``(B, W, C)``, float32 (as the windower holds them) or
        float64. Each window is worked on as one row of its ``W·C`` readings, so every step runs over long rows;
        in numpy, whose calls cost a few µs on a live step's few windows against ~8 µs for torch's. ``mean`` and
        ``std`` ``(B, C)``: each window standardised by its own row of them instead (a sensor's baseline).

        >>> p = Preprocessor(mean=np.zeros(1), std=np.ones(1), detrend=np.zeros(1, dtype=bool))
        >>> w = np.array([[[12.0], [8.0]], [[3.0], [5.0]]], dtype=np.float32)
        >>> p.array(w, np.array([[10.0], [4.0]]), np.array([[2.0], [1.0]]))[:, :, 0].tolist()
        [[1.0, -1.0], [-1.0, 1.0]]
        """
        w = np.asarray(windows)
        n, size, c = w.shape
        plan = self._plan(size)
        raw = w.reshape(n, size * c)
        if mean is None or std is None:
            return standardise(raw, (plan.mean_hi, plan.mean_lo) if raw.dtype == np.float32 else plan.mean,
                               (plan.scale,), self.smooth, c, plan.detrend)
        m = np.asarray(mean, dtype=np.float64)  # each window's own constants, tiled to its row's W·C readings
        centre: np.ndarray | tuple[np.ndarray, np.ndarray]
        if raw.dtype == np.float32:  # split before they are tiled
            hi, lo = _split(m)
            centre = (np.tile(hi, size), np.tile(lo, size))
        else:
            centre = np.tile(m, size)
        inv = np.tile((1.0 / np.asarray(std, dtype=np.float64)).astype(np.float32), size)
        return standardise(raw, centre, (plan.per_count, inv), self.smooth, c, plan.detrend)

    def _plan(self, window_size: int) -> _Plan:
        """The constants for windows of ``window_size`` readings, made once (the dataclass is frozen: they are
        kept in its ``__dict__``, out of its fields)."""
        plans: dict[int, _Plan] = self.__dict__.setdefault("_plans", {})
        plan = plans.get(window_size)
        if plan is None:
            plan = plans[window_size] = _Plan.build(self, window_size)
        return plan

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "detrend": self.detrend.tolist(),
                "smooth": self.smooth}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        return cls(np.array(d["mean"], dtype=np.float64), np.array(d["std"], dtype=np.float64),
                   np.array(d["detrend"], dtype=bool), int(d.get("smooth", 1)))


def standardise(raw: np.ndarray, centre: np.ndarray | tuple[np.ndarray, np.ndarray], scales: Sequence[np.ndarray],
                smooth: int, c: int, detrend: np.ndarray | None) -> np.ndarray:
    """Model input ``(..., W, C)`` float32 of windows given as rows ``(..., W·C)`` of their raw readings, float32 or
    float64: centred by ``centre`` (float64 means broadcast against the rows, or for float32 rows their float32 part
    and what it leaves: as exact as float64), summed over ``smooth`` trailing readings, multiplied by each of
    ``scales`` in turn, and each channel with a ``detrend`` weight ``(C,)`` (1 / W) moved to mean zero in its window.
    :meth:`Preprocessor.array` and a bank of stacked models (each row by its own model's constants) share it.

    >>> standardise(np.array([[1.0, 3.0, 5.0]]), np.zeros(3), (np.ones(3, np.float32),), 2, 1, None).tolist()
    [[[1.0], [4.0], [8.0]]]
    """
    if raw.dtype == np.float32:
        hi, lo = centre if isinstance(centre, tuple) else _split(centre)
        x = raw - hi
        x -= lo
    else:
        assert not isinstance(centre, tuple), "float64 rows are centred by the float64 mean"
        x = (raw.astype(np.float64) - centre).astype(np.float32)
    width = x.shape[-1]
    if smooth > 1:  # a trailing sum of a few shifted copies; the division is in the scales
        total = x.copy()
        for lag in range(1, min(smooth, width // c)):
            total[..., lag * c :] += x[..., : -lag * c]
        x = total
    for scale in scales:
        x *= scale
    x3 = x.reshape(*x.shape[:-1], width // c, c)
    if detrend is not None:  # each detrended channel's mean over the window, off each of its readings
        x3 -= (np.einsum("...wc->...c", x3) * detrend)[..., None, :]  # einsum: a sum over W loops over C
    return x3


def _split(mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 values as a float32 part and the float32 rest."""
    hi = mean.astype(np.float32)
    return hi, (mean - hi).astype(np.float32)


def _counts(window_size: int, span: int) -> np.ndarray:
    """How many readings the trailing mean over ``span`` averages at each step of a window."""
    return np.minimum(np.arange(1, window_size + 1), span).astype(np.float32)


@dataclass(frozen=True)
class _Plan:
    """A :class:`Preprocessor`'s constants for one window size, over the flattened ``W·C`` readings of a window."""

    mean: np.ndarray  # float64
    mean_hi: np.ndarray  # float32 part of the mean, and what it leaves
    mean_lo: np.ndarray
    scale: np.ndarray  # 1 / (std × readings the trailing mean averages)
    per_count: np.ndarray  # 1 / readings the trailing mean averages (for windows with their own std)
    detrend: np.ndarray | None  # (C,) float32: 1 / W for a detrended channel, else 0; None: none detrended

    @classmethod
    def build(cls, p: Preprocessor, window_size: int) -> _Plan:
        mean = np.tile(p.mean, window_size)
        hi = mean.astype(np.float32)
        counts = _counts(window_size, p.smooth).astype(np.float64)
        scale = (1.0 / (counts[:, None] * p.std[None, :])).reshape(-1).astype(np.float32)
        detrend = (p.detrend / window_size).astype(np.float32) if p.detrend.any() else None
        per_count = np.repeat(1.0 / counts, len(p.std)).astype(np.float32)
        return cls(mean, hi, (mean - hi).astype(np.float32), scale, per_count, detrend)
