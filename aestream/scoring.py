"""Scoring windows with a trained autoencoder: a score per window and each channel's share of it.

Each channel's reconstruction error is divided by its mean error on validation windows (``channel_scale``), so
every channel speaks in the same unit and a fault on one channel is not drowned by the others' noise. The score is
the mean (or max, ``score_reduce``) of these normalised errors: about 1 on normal data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from aestream.features import Preprocessor
from aestream.models import Autoencoder

__all__ = ["ScoreBatch", "Scorer", "resolve_device"]


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when a GPU is visible, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class ScoreBatch:
    """Scores ``(B,)`` and channel shares ``(B, C)`` (rows sum to 1) of a batch of windows."""

    scores: np.ndarray
    shares: np.ndarray


class Scorer:
    """A model with its preprocessing and channel scales, on one device."""

    def __init__(
        self,
        model: Autoencoder,
        preprocessor: Preprocessor,
        channel_scale: np.ndarray | None = None,
        score_reduce: str = "mean",
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.preprocessor = preprocessor
        n = model.n_channels
        self.channel_scale = np.ones(n) if channel_scale is None else np.asarray(channel_scale, dtype=np.float64)
        self.score_reduce = score_reduce

    def _tensor(self, windows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.preprocessor(windows)).to(self.device)

    def raw_channel_errors(self, windows: np.ndarray) -> np.ndarray:
        """Unscaled per-channel mean squared errors ``(B, C)`` of raw windows ``(B, W, C)``."""
        if len(windows) == 0:
            return np.zeros((0, self.model.n_channels))
        with torch.inference_mode():
            errors = self.model.channel_errors(self._tensor(windows))
        return errors.double().cpu().numpy()

    def score(self, windows: np.ndarray) -> ScoreBatch:
        """Scores and channel shares of raw windows ``(B, W, C)``."""
        rel = self.raw_channel_errors(windows) / self.channel_scale
        scores = rel.max(axis=1) if self.score_reduce == "max" else rel.mean(axis=1)
        total = rel.sum(axis=1, keepdims=True)
        shares = np.divide(rel, total, out=np.full_like(rel, 1.0 / rel.shape[1]), where=total > 0)
        return ScoreBatch(scores, shares)

    def reconstruct(self, windows: np.ndarray) -> np.ndarray:
        """Reconstructed windows in the readings' own units ``(B, W, C)`` (detrended channels keep their mean)."""
        with torch.inference_mode():
            recon = self.model(self._tensor(windows)).double().cpu().numpy()
        p = self.preprocessor
        if p.detrend.any():
            level = ((windows - p.mean) / p.std)[:, :, p.detrend].mean(axis=1, keepdims=True)
            recon[:, :, p.detrend] += level
        return recon * p.std + p.mean

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Windows ``(B, W, C)`` in the readings' units from latent codes (detrended channels come back around
        their long-run mean: the window's own level is not in the code)."""
        z = torch.as_tensor(np.asarray(codes, dtype=np.float32), device=self.device)
        with torch.inference_mode():
            x = self.model.decode(z).double().cpu().numpy()
        return x * self.preprocessor.std + self.preprocessor.mean

    def encode(self, windows: np.ndarray) -> np.ndarray:
        """Latent codes ``(B, latent_size)`` of raw windows."""
        with torch.inference_mode():
            return self.model.encode(self._tensor(windows)).float().cpu().numpy()
