"""Vanilla autoencoder: an MLP over the flattened window, trained to minimise reconstruction error."""

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
