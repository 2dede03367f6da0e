"""Contractive autoencoder: reconstruction plus ``λ·‖∂h/∂x‖²_F``, the encoder Jacobian's Frobenius norm.

The encoder is one sigmoid layer ``h = σ(Wx + b)``, whose Jacobian is ``diag(h(1-h)) W``; so the penalty has the
closed form ``Σ_j (h_j(1-h_j))² Σ_i W_ji²`` (Rifai et al., 2011), exact and one matrix product per batch.

For example::

    >>> import torch
    >>> model = ContractiveAutoencoder(16, 4, latent_size=4)
    >>> x = torch.randn(8, 16, 4)
    >>> bool(model.loss(x) > torch.nn.functional.mse_loss(model(x), x))  # reconstruction + λ·‖J‖²_F
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from aestream.models.base import Autoencoder, mlp

__all__ = ["ContractiveAutoencoder"]


class ContractiveAutoencoder(Autoencoder):
    """One sigmoid encoder layer, an MLP decoder, and the contractive penalty."""

    family = "contractive"

    def __init__(
        self,
        window_size: int,
        n_channels: int,
        latent_size: int = 8,
        hidden_size: int = 64,
        lam: float = 1e-4,
    ) -> None:
        super().__init__(window_size, n_channels, latent_size, hidden_size)
        self.lam = lam
        self.encoder = nn.Sequential(nn.Linear(window_size * n_channels, latent_size), nn.Sigmoid())
        self.decoder = mlp([latent_size, hidden_size, window_size * n_channels])

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "lam": self.lam}

    def jacobian_penalty(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over the batch of ``‖∂h/∂x‖²_F``, in closed form."""
        if h is None:
            h = self.encode(x)
        weight: torch.Tensor = self.encoder[0].weight  # type: ignore[index, assignment]  # (latent, W·C)
        return (((h * (1 - h)) ** 2) @ (weight**2).sum(dim=1)).mean()

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encode(x)
        return nn.functional.mse_loss(self.decode(h), x) + self.lam * self.jacobian_penalty(x, h)
