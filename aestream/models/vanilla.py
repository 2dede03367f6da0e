"""Vanilla autoencoder: an MLP over the flattened window, trained to minimise reconstruction error.

For example::

    >>> import torch
    >>> model = VanillaAutoencoder(window_size=16, n_channels=4, latent_size=4)
    >>> x = torch.randn(8, 16, 4)
    >>> model.encode(x).shape, model(x).shape, model.score(x).shape
    (torch.Size([8, 4]), torch.Size([8, 16, 4]), torch.Size([8]))
"""

from __future__ import annotations

from aestream.models.base import Autoencoder, mlp

__all__ = ["VanillaAutoencoder"]


class VanillaAutoencoder(Autoencoder):
    """``W·C → hidden → latent → hidden → W·C``."""

    family = "vanilla"

    def __init__(self, window_size: int, n_channels: int, latent_size: int = 8, hidden_size: int = 64) -> None:
        super().__init__(window_size, n_channels, latent_size, hidden_size)
        d = window_size * n_channels
        self.encoder = mlp([d, hidden_size, latent_size])
        self.decoder = mlp([latent_size, hidden_size, d])
