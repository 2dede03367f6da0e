"""The shared autoencoder interface: ``loss(batch)`` to train, ``score(batch)`` to judge (higher = worse).

Batches are ``(batch, window_size, n_channels)`` float tensors, already normalised. Every family is an
:class:`Autoencoder` with ``encode``/``decode``; ``channel_errors`` gives each channel's mean squared
reconstruction error, from which scores and channel shares are made outside the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, cast

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "Autoencoder", "FrozenMlp", "mlp", "mlp_layers"]


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
        ask again after they change (:class:`~aestream.detect.scoring.Scorer` does). The MLP families on a CPU in
        eval mode: :class:`FrozenMlp`."""
        layers = mlp_layers(self)
        if layers is None or cast(nn.Linear, layers[0]).weight.device.type != "cpu":
            return self.forward
        return FrozenMlp(self, layers)

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


ACTIVATIONS: dict[type[nn.Module], Callable[[torch.Tensor], torch.Tensor]] = {
    nn.ReLU: torch.relu_, nn.Sigmoid: torch.sigmoid_, nn.Tanh: torch.tanh_}
"""The activations an MLP family may use, each with its in-place function."""


def mlp_layers(model: nn.Module) -> list[nn.Module] | None:
    """The layers of a model that is its encoder then its decoder, each a ``Sequential`` of linear layers and
    activations over the flattened window (the MLP families, in eval mode), else None.

    >>> from aestream.models import build_model
    >>> [type(m).__name__ for m in mlp_layers(build_model("vanilla", window_size=4, n_channels=2).eval())]
    ['Linear', 'ReLU', 'Linear', 'Linear', 'ReLU', 'Linear']
    >>> mlp_layers(build_model("conv", window_size=8, n_channels=2).eval()) is None
    True
    """
    if not isinstance(model, Autoencoder) or model.training:
        return None
    cls = type(model)
    if (cls.forward, cls.encode, cls.decode) != (Autoencoder.forward, Autoencoder.encode, Autoencoder.decode):
        return None
    if not (isinstance(model.encoder, nn.Sequential) and isinstance(model.decoder, nn.Sequential)):
        return None
    layers = [m for m in (*model.encoder, *model.decoder) if not isinstance(m, (nn.Dropout, nn.Identity))]
    if not layers or not isinstance(layers[0], nn.Linear):
        return None
    if not all(isinstance(m, nn.Linear) or type(m) in ACTIVATIONS for m in layers):
        return None
    return layers


class FrozenMlp:
    """An MLP family's eval forward pass as one ``torch.addmm`` a linear layer (its weights copied, transposed)
    and in-place activations: the module calls cost more than the products on a live step's few windows
    (25 windows of 32 × 4 readings: ~40 µs against ~90 µs through the modules). Build a new one after the
    weights change; they need no autograd, so neither does the pass.

    >>> from aestream.models import build_model
    >>> model = build_model("vanilla", window_size=6, n_channels=2).eval()
    >>> x = torch.randn(3, 6, 2)
    >>> torch.allclose(FrozenMlp(model, mlp_layers(model))(x), model(x), atol=1e-6)
    True
    """

    def __init__(self, model: Autoencoder, layers: list[nn.Module]) -> None:
        self.shape = (model.window_size, model.n_channels)
        with torch.no_grad():
            self.steps: list[tuple[torch.Tensor, torch.Tensor] | Callable[[torch.Tensor], torch.Tensor]] = [
                (layer.weight.detach().t().contiguous(), layer.bias.detach().clone())  # type: ignore[operator]
                if isinstance(layer, nn.Linear) else ACTIVATIONS[type(layer)] for layer in layers]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(len(x), -1)
        for step in self.steps:  # the first is a linear layer: the activations never write over x
            h = torch.addmm(step[1], h, step[0]) if isinstance(step, tuple) else step(h)
        return h.view(-1, *self.shape)
