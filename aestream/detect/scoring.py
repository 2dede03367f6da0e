"""Scoring windows with a trained autoencoder: a score per window and each channel's share of it.

Each channel's reconstruction error is divided by its mean error on validation windows (``channel_scale``), so
every channel speaks in the same unit and a fault on one channel is not drowned by the others' noise. The score is
the mean (or max, ``score_reduce``) of these normalised errors: about 1 on normal data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from aestream.detect.features import Preprocessor
from aestream.errors import AestreamError
from aestream.models import Autoencoder

__all__ = ["ScoreBatch", "Scorer", "reconstruction_errors", "reduce_errors", "resolve_device", "squared_errors"]


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when a GPU is visible, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def squared_errors(recon: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The mean squared difference of two float32 arrays of windows ``(..., W, C)`` over each window's readings,
    ``(..., C)`` float64. Summed by ``einsum``: numpy's ``mean`` over the readings' axis runs a loop over the few
    channels for every reading (25 windows of 32 × 4: ~25 µs against ~10 µs).

    >>> squared_errors(np.array([[[1.0], [3.0]]], np.float32), np.zeros((1, 2, 1), np.float32)).tolist()
    [[5.0]]
    """
    d = recon - x
    d *= d
    return np.einsum("...wc->...c", d).astype(np.float64) / d.shape[-2]  # type: ignore[no-any-return]


def reconstruction_errors(forward: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray,
                          device: torch.device) -> np.ndarray:
    """Per-channel mean squared errors ``(..., C)`` float64 of ``forward``'s reconstruction of preprocessed windows
    ``x`` ``(..., W, C)``: on a CPU the pass runs on ``x``'s own memory and the errors are taken in numpy
    (:func:`squared_errors`); on another device, there."""
    with torch.inference_mode():
        if device.type == "cpu":
            return squared_errors(forward(torch.from_numpy(x)).numpy(), x)
        xt = torch.from_numpy(x).to(device)
        return (forward(xt) - xt).square_().mean(dim=-2).double().cpu().numpy()  # type: ignore[no-any-return]


def reduce_errors(rel: np.ndarray, how: str) -> np.ndarray:
    """Window scores ``(B,)`` from normalised channel errors ``(B, C)``: their ``"mean"`` or ``"max"``."""
    return rel.max(axis=1) if how == "max" else rel.mean(axis=1)


@dataclass(frozen=True)
class ScoreBatch:
    """Scores ``(B,)`` and channel shares ``(B, C)`` (rows sum to 1) of a batch of windows."""

    scores: np.ndarray
    shares: np.ndarray

    @classmethod
    def of(cls, rel: np.ndarray, how: str) -> ScoreBatch:
        """Scores and shares from channel errors already divided by their channel scales.

        >>> ScoreBatch.of(np.array([[1.0, 3.0]]), "mean")
        ScoreBatch(scores=array([2.]), shares=array([[0.25, 0.75]]))
        """
        total = rel.sum(axis=1, keepdims=True)
        shares = np.divide(rel, total, out=np.full_like(rel, 1.0 / rel.shape[1]), where=total > 0)
        # the mean is the total over the channels' count, as numpy's mean computes it
        return cls(rel.max(axis=1) if how == "max" else total[:, 0] / rel.shape[1], shares)


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
        self.device = resolve_device(str(device))  # "auto" as the shipped config says: CUDA when there is one
        self.model = model.to(self.device).eval()
        self.preprocessor = preprocessor
        n = model.n_channels
        self.channel_scale = np.ones(n) if channel_scale is None else np.asarray(channel_scale, dtype=np.float64)
        self.score_reduce = score_reduce
        self._forward: Callable[[torch.Tensor], torch.Tensor] = self.model.forward
        self._params = list(self.model.parameters())  # module.parameters() walks the modules: ~0.1 ms a call
        self._weights: tuple[Any, ...] = ()

    def _tensor(self, windows: np.ndarray, mean: np.ndarray | None = None,
                std: np.ndarray | None = None) -> torch.Tensor:
        return self.preprocessor.tensor(windows, mean, std).to(self.device)

    def _frozen(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The model's :meth:`~aestream.models.Autoencoder.frozen` forward pass, asked again whenever its
        weights, their device or its mode changed since."""
        weights = (self.model.training, *((p.data_ptr(), p._version) for p in self._params))
        if weights != self._weights:
            self._forward, self._weights = self.model.frozen(), weights
        return self._forward

    def raw_channel_errors(self, windows: np.ndarray, mean: np.ndarray | None = None,
                           std: np.ndarray | None = None) -> np.ndarray:
        """Unscaled per-channel mean squared errors ``(B, C)`` of raw windows ``(B, W, C)``; with ``mean`` and
        ``std`` ``(B, C)``, each window standardised by its own row of them (a sensor's baseline). On a CPU the
        model's pass runs on the preprocessed windows' own memory, and the errors are taken in numpy."""
        if len(windows) == 0:
            return np.zeros((0, self.model.n_channels))
        return reconstruction_errors(self._frozen(), self.preprocessor.array(windows, mean, std), self.device)

    def score(self, windows: np.ndarray) -> ScoreBatch:
        """Scores and channel shares of raw windows ``(B, W, C)``."""
        return ScoreBatch.of(self.raw_channel_errors(windows) / self.channel_scale, self.score_reduce)

    def levels(self, windows: np.ndarray) -> np.ndarray:
        """Each detrended channel's level in each raw window ``(B, W, C)``: its mean in the readings' own units,
        ``(B, m)`` for the model's ``m`` detrended channels in channel order (``(B, 0)`` when none). The encoder
        never sees it, so the latent code does not carry it: :meth:`decode` needs it back."""
        return np.asarray(windows, dtype=np.float64)[:, :, self.preprocessor.detrend].mean(axis=1)

    def reconstruct(self, windows: np.ndarray) -> np.ndarray:
        """Reconstructed windows in the readings' own units ``(B, W, C)`` (detrended channels keep their level)."""
        with torch.inference_mode():
            recon = self._frozen()(self._tensor(windows)).double().cpu().numpy()
        return self._in_units(recon, self.levels(windows))

    def decode(self, codes: np.ndarray, levels: np.ndarray | None = None) -> np.ndarray:
        """Windows ``(B, W, C)`` in the readings' units from latent codes and, for detrended channels, the windows'
        ``levels`` (:meth:`levels`); so ``decode(encode(w), levels(w))`` is ``reconstruct(w)``. Without
        ``levels``, detrended channels come back around their long-run (training) mean."""
        z = torch.from_numpy(np.array(codes, dtype=np.float32)).to(self.device)  # a copy: codes may be read-only
        with torch.inference_mode():
            x = self.model.decode(z).double().cpu().numpy()
        return self._in_units(x, levels)

    def encode(self, windows: np.ndarray) -> np.ndarray:
        """Latent codes ``(B, latent_size)`` of raw windows."""
        with torch.inference_mode():
            return self.model.encode(self._tensor(windows)).float().cpu().numpy()

    def _in_units(self, x: np.ndarray, levels: np.ndarray | None) -> np.ndarray:
        """Model-space windows ``(B, W, C)`` back in the readings' units, detrended channels at ``levels``."""
        p = self.preprocessor
        out = x * p.std + p.mean
        if levels is None:
            return out
        lv = np.asarray(levels, dtype=np.float64)
        m = int(p.detrend.sum())
        if lv.shape != (len(x), m):
            raise AestreamError(f"window levels of shape {lv.shape} do not fit {len(x)} window(s) of a model that "
                                f"detrends {m} channel(s): pass one level per detrended channel and window "
                                f"(Scorer.levels), or none")
        out[:, :, p.detrend] += lv[:, None, :] - p.mean[p.detrend]
        return out
