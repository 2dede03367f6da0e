"""Sparse autoencoder: reconstruction plus a sparsity penalty on the latent activations.

``penalty = "l1"``: ``l1 · mean|h|`` on the code's activations. ``penalty = "kl"``: sigmoid latent,
``beta · Σ_j KL(ρ ‖ ρ̂_j)`` with ``ρ̂_j`` the batch-mean activation of unit j (Ng's sparse autoencoder).
``penalty = "weights"``: ``l1 · Σ|w|`` over the weights, which drives connections to zero. ``penalty = "none"``
with ``dropout > 0`` leaves sparsity to dropout alone. ``dropout`` (any penalty) zeroes that share of the code's
units at random while training. The code may be overcomplete (``latent_size`` above the window's size): the
penalty, not the bottleneck, keeps it from copying its input.

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

__all__ = ["PENALTIES", "SparseAutoencoder", "kl_sparsity"]

PENALTIES = ("l1", "kl", "weights", "none")

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
        dropout: float = 0.0,
    ) -> None:
        super().__init__(window_size, n_channels, latent_size, hidden_size)
        if penalty not in PENALTIES:
            raise ValueError(f"sparse penalty {penalty!r} is unknown: use one of {', '.join(PENALTIES)}")
        if not 0.0 < rho < 1.0:
            raise ValueError(f"sparse rho {rho!r} must lie strictly between 0 and 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"sparse dropout {dropout!r} must lie in [0, 1)")
        self.penalty, self.l1, self.rho, self.beta, self.dropout = penalty, l1, rho, beta, dropout
        d = window_size * n_channels
        self.encoder = mlp([d, hidden_size, latent_size], nn.Sigmoid() if penalty == "kl" else nn.ReLU())
        self.decoder = mlp([latent_size, hidden_size, d])
        self.code_dropout = nn.Dropout(dropout)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "penalty": self.penalty, "l1": self.l1, "rho": self.rho,
                "beta": self.beta, "dropout": self.dropout}

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encode(x)
        recon = nn.functional.mse_loss(self.decode(self.code_dropout(h)), x)  # dropout: only while training
        if self.penalty == "kl":
            return recon + self.beta * kl_sparsity(h, self.rho)
        if self.penalty == "l1":
            return recon + self.l1 * h.abs().mean()
        if self.penalty == "weights":
            return recon + self.l1 * sum(p.abs().sum() for n, p in self.named_parameters() if n.endswith("weight"))
        return recon
