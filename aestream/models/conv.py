"""Temporal convolutional autoencoder: 1-D convolutions over time, channels as feature maps.

Encoder: two stride-2 ``Conv1d`` layers (kernel ``kernel_size``) then a linear map to the latent code; the
decoder mirrors it with ``ConvTranspose1d``. This is the shape of SKAB's leading Conv-AE, with a latent bottleneck.

For example::

    >>> import torch
    >>> model = ConvAutoencoder(window_size=32, n_channels=8, latent_size=8)
    >>> model.encode(torch.randn(2, 32, 8)).shape  # 2 windows of 32 readings × 8 channels
    torch.Size([2, 8])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from aestream.models.base import Autoencoder

__all__ = ["ConvAutoencoder"]


class ConvAutoencoder(Autoencoder):
    """``(B, W, C)`` → conv → conv → latent → deconv → deconv → ``(B, W, C)``."""

    family = "conv"

    def __init__(
        self,
        window_size: int,
        n_channels: int,
        latent_size: int = 8,
        hidden_size: int = 64,
        filters: int = 32,
        kernel_size: int = 7,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(window_size, n_channels, latent_size, hidden_size)
        self.filters, self.kernel_size, self.dropout = filters, kernel_size, dropout
        pad = kernel_size // 2
        f2 = max(filters // 2, 1)
        self.conv = nn.Sequential(
            nn.Conv1d(n_channels, filters, kernel_size, stride=2, padding=pad), nn.ReLU(), nn.Dropout(dropout),
            nn.Conv1d(filters, f2, kernel_size, stride=2, padding=pad), nn.ReLU(),
        )
        with torch.no_grad():
            self._shape = tuple(self.conv(torch.zeros(1, n_channels, window_size)).shape[1:])
        flat = self._shape[0] * self._shape[1]
        self.to_latent = nn.Linear(flat, latent_size)
        self.from_latent = nn.Sequential(nn.Linear(latent_size, flat), nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose1d(f2, filters, kernel_size, stride=2, padding=pad, output_padding=1), nn.ReLU(),
            nn.Dropout(dropout),
            nn.ConvTranspose1d(filters, filters, kernel_size, stride=2, padding=pad, output_padding=1), nn.ReLU(),
            nn.Conv1d(filters, n_channels, 1),
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "filters": self.filters, "kernel_size": self.kernel_size,
                "dropout": self.dropout}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.conv(x.transpose(1, 2)).flatten(1))  # type: ignore[no-any-return]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(z).view(-1, *self._shape)
        out = self.deconv(h)[:, :, : self.window_size]
        if out.shape[-1] < self.window_size:  # odd sizes: pad the tail by repeating the last step
            out = nn.functional.pad(out, (0, self.window_size - out.shape[-1]), mode="replicate")
        return out.transpose(1, 2)
