"""Sparse autoencoder: reconstruction plus a sparsity penalty on the latent activations.

``penalty = "l1"``: ``l1 · mean|h|``. ``penalty = "kl"``: sigmoid latent, ``beta · Σ_j KL(ρ ‖ ρ̂_j)`` with
``ρ̂_j`` the batch-mean activation of unit j (Ng's sparse autoencoder).

For example::

    >>> import torch
    >>> x = torch.randn(8, 16, 4)
    >>> kl = SparseAutoencoder(16, 4, latent_size=32, penalty="kl", rho=0.05)  # an overcomplete code
    >>> bool(kl.loss(x) > torch.nn.functional.mse_loss(kl(x), x))  # reconstruction + β·KL(ρ ‖ ρ̂)
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from aestream.models.base import Autoencoder, mlp

__all__ = ["SparseAutoencoder", "kl_sparsity"]

_EPS = 1e-6


def kl_sparsity(h: torch.Tensor, rho: float) -> torch.Tensor:
    """``Σ_j KL(ρ ‖ ρ̂_j)`` for activations ``h`` in (0, 1), ``ρ̂`` the mean over the batch."""
    rho_hat = h.mean(dim=0).clamp(_EPS, 1 - _EPS)
    return (rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum()


class SparseAutoencoder(Autoencoder):
    """An MLP autoencoder whose latent code is pushed towards sparsity."""

    family = "sparse"

    def __init__(
        self,
        window_size: int,
        n_channels: int,
        latent_size: int = 8,
        hidden_size: int = 64,
        penalty: str = "l1",
        l1: float = 1e-3,
        rho: float = 0.05,
        beta: float = 1e-2,
    ) -> None:
        super().__init__(window_size, n_channels, latent_size, hidden_size)
        if penalty not in ("l1", "kl"):
            raise ValueError(f"sparse penalty {penalty!r} is unknown: use 'l1' or 'kl'")
        if not 0.0 < rho < 1.0:
            raise ValueError(f"sparse rho {rho!r} must lie strictly between 0 and 1")
        self.penalty, self.l1, self.rho, self.beta = penalty, l1, rho, beta
        d = window_size * n_channels
        self.encoder = mlp([d, hidden_size, latent_size], nn.Sigmoid() if penalty == "kl" else nn.ReLU())
        self.decoder = mlp([latent_size, hidden_size, d])

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "penalty": self.penalty, "l1": self.l1, "rho": self.rho,
                "beta": self.beta}

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encode(x)
        recon = nn.functional.mse_loss(self.decode(h), x)
        if self.penalty == "kl":
            return recon + self.beta * kl_sparsity(h, self.rho)
        return recon + self.l1 * h.abs().mean()
