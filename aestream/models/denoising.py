"""Denoising autoencoder: trained to reconstruct the clean window from a corrupted copy.

Corruption: additive gaussian noise (``noise_std``, in normalised units) and random masking of readings to zero
(``mask_prob``). At inference the input is not corrupted; :meth:`denoise` is the cleaned window.

For example::

    >>> import torch
    >>> model = DenoisingAutoencoder(16, 4, noise_std=0.2).eval()
    >>> x = torch.randn(8, 16, 4)
    >>> model.denoise(x).shape == x.shape  # at inference the input is not corrupted
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from aestream.models.base import Autoencoder, mlp

__all__ = ["DenoisingAutoencoder"]


class DenoisingAutoencoder(Autoencoder):
    """An MLP autoencoder trained on corrupted inputs."""

    family = "denoising"

    def __init__(
        self,
        window_size: int,
        n_channels: int,
        latent_size: int = 8,
        hidden_size: int = 64,
        noise_std: float = 0.3,
        mask_prob: float = 0.1,
    ) -> None:
        super().__init__(window_size, n_channels, latent_size, hidden_size)
        if not 0.0 <= mask_prob < 1.0:
            raise ValueError(f"denoising mask_prob {mask_prob!r} must lie in [0, 1)")
        self.noise_std, self.mask_prob = noise_std, mask_prob
        d = window_size * n_channels
        self.encoder = mlp([d, hidden_size, latent_size])
        self.decoder = mlp([latent_size, hidden_size, d])

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "noise_std": self.noise_std, "mask_prob": self.mask_prob}

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """A noisy, partly masked copy of ``x``."""
        noisy = x + self.noise_std * torch.randn_like(x)
        if self.mask_prob > 0:
            noisy = noisy * (torch.rand_like(x) >= self.mask_prob)
        return noisy

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(self(self.corrupt(x)), x)

    def denoise(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of an uncorrupted input: the cleaned window."""
        return self(x)
