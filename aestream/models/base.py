"""The shared autoencoder interface: ``loss(batch)`` to train, ``score(batch)`` to judge (higher = worse).

Batches are ``(batch, window_size, n_channels)`` float tensors, already normalised. Every family is an
:class:`Autoencoder` with ``encode``/``decode``; ``channel_errors`` gives each channel's mean squared
reconstruction error, from which scores and channel shares are made outside the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["Autoencoder", "mlp"]


class Autoencoder(nn.Module):
    """Base of every family. Subclasses set ``family`` and build ``encoder``/``decoder`` in ``__init__``."""

    family: ClassVar[str] = ""
    encoder: nn.Module
    decoder: nn.Module

    def __init__(self, window_size: int, n_channels: int, latent_size: int, hidden_size: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.n_channels = n_channels
        self.latent_size = latent_size
        self.hidden_size = hidden_size

    def hyperparameters(self) -> dict[str, Any]:
        """Everything needed, with the family, to rebuild this model before loading its weights."""
        return {
            "window_size": self.window_size,
            "n_channels": self.n_channels,
            "latent_size": self.latent_size,
            "hidden_size": self.hidden_size,
        }

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, W, C)`` → latent ``(B, latent_size)``."""
        return self.encoder(x.flatten(1))  # type: ignore[no-any-return]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent ``(B, latent_size)`` → reconstruction ``(B, W, C)``."""
        return self.decoder(z).view(-1, self.window_size, self.n_channels)  # type: ignore[no-any-return]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def frozen(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The forward pass for scoring with the weights as they are now: the same reconstruction as ``self(x)``
        (to float rounding), computed however runs fastest. A family may copy its weights into another form, so
        ask again after they change (:class:`~aestream.detect.scoring.Scorer` does)."""
        return self.forward

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Training loss of a batch: mean squared reconstruction error (families add their penalty)."""
        return nn.functional.mse_loss(self(x), x)

    def channel_errors(self, x: torch.Tensor) -> torch.Tensor:
        """Per-window, per-channel mean squared reconstruction error, ``(B, C)``."""
        return ((self(x) - x) ** 2).mean(dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Per-window anomaly score, ``(B,)``: the mean squared reconstruction error."""
        return self.channel_errors(x).mean(dim=1)


def mlp(sizes: list[int], last_activation: nn.Module | None = None) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU between them (and ``last_activation`` at the end)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    if last_activation is not None:
        layers.append(last_activation)
    return nn.Sequential(*layers)
