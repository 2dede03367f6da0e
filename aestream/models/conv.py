"""Temporal convolutional autoencoder: 1-D convolutions over time, channels as feature maps.

Encoder: two stride-2 ``Conv1d`` layers (kernel ``kernel_size``) then a linear map to the latent code; the
decoder mirrors it with ``ConvTranspose1d``. This is the shape of SKAB's leading Conv-AE, with a latent bottleneck.

On a CPU, scoring runs :meth:`ConvAutoencoder.frozen`: the same layers over channels-last ``(B, W, C)`` windows
(:class:`FrozenConv`), the same reconstruction to float rounding at about twice the speed of the module on a core
(1.8–2.6 times in three runs of 256 windows of 32 × 8).

For example::

    >>> import torch
    >>> model = ConvAutoencoder(window_size=32, n_channels=8, latent_size=8)
    >>> model.encode(torch.randn(2, 32, 8)).shape  # 2 windows of 32 readings × 8 channels
    torch.Size([2, 8])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from aestream.models.base import Autoencoder

__all__ = ["ConvAutoencoder", "FrozenConv"]


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

    def frozen(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """On a CPU in eval mode, :class:`FrozenConv` of the weights as they are now; else the forward pass."""
        if self.training or self.to_latent.weight.device.type != "cpu":
            return self.forward
        return FrozenConv(self)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.conv(x.transpose(1, 2)).flatten(1))  # type: ignore[no-any-return]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(z).view(-1, *self._shape)
        out = self.deconv(h)[:, :, : self.window_size]
        if out.shape[-1] < self.window_size:  # odd sizes: pad the tail by repeating the last step
            out = nn.functional.pad(out, (0, self.window_size - out.shape[-1]), mode="replicate")
        return out.transpose(1, 2)


class FrozenConv:
    """A :class:`ConvAutoencoder`'s eval forward pass over channels-last windows, as a CPU runs it fastest.

    ``ConvAutoencoder`` transposes ``(B, W, C)`` windows to ``(B, C, W)`` and back, and torch runs ``Conv1d`` and,
    worse, ``ConvTranspose1d`` over that layout through slow kernels. Here the windows stay channels-last: each
    encoder layer runs as its 2-D twin over ``(B, C, 1, W)`` views in the ``channels_last`` memory format, which
    oneDNN computes directly, and each decoder layer as one plain convolution of its even and odd output steps
    (:func:`_polyphase`; oneDNN's transposed convolutions took 1.3–2.1 times as long a layer). ReLUs run in place, the
    latent maps read and write the channels-last order (their weights rearranged), and the final 1×1 convolution
    is one matrix product. The weights are copied in: build a new one after they change. Dropout is the identity,
    as in eval mode.

    >>> model = ConvAutoencoder(window_size=20, n_channels=3, latent_size=4, filters=8, kernel_size=5).eval()
    >>> x = torch.randn(4, 20, 3)
    >>> torch.allclose(FrozenConv(model)(x), model(x), atol=1e-5)
    True
    """

    def __init__(self, model: ConvAutoencoder) -> None:
        self.window_size, self.pad = model.window_size, model.kernel_size // 2
        f2, n2 = model._shape
        lat = model.latent_size
        self.encoder = [_as_2d(cast(nn.Conv1d, model.conv[i])) for i in (0, 3)]
        self.decoder = [_polyphase(cast(nn.ConvTranspose1d, model.deconv[i])) for i in (0, 3)]
        # the linear maps flatten (channel, step); channels-last rows are (step, channel)
        self.to_latent = (model.to_latent.weight.detach().view(lat, f2, n2).permute(2, 1, 0).reshape(-1, lat)
                          .contiguous(), _bias(model.to_latent))
        fl = cast(nn.Linear, model.from_latent[0])
        self.from_latent = (fl.weight.detach().view(f2, n2, lat).permute(2, 1, 0).reshape(lat, -1).contiguous(),
                            _bias(fl).view(f2, n2).t().reshape(-1).contiguous())
        self.steps = (n2, f2)
        out = cast(nn.Conv1d, model.deconv[5])
        self.out = (out.weight.detach()[:, :, 0].t().contiguous(), _bias(out))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``(B, W, C)`` of normalised windows ``(B, W, C)``."""
        n, pad = len(x), (0, self.pad)
        h = x.permute(0, 2, 1).unsqueeze(2)  # (B, C, 1, W) in the channels_last format: a view of x
        for weight, bias in self.encoder:
            h = F.conv2d(h, weight, bias, stride=(1, 2), padding=pad).relu_()
        z = torch.addmm(self.to_latent[1], h.permute(0, 2, 3, 1).reshape(n, -1), self.to_latent[0])
        h = torch.addmm(self.from_latent[1], z, self.from_latent[0]).relu_()
        h = h.view(n, 1, *self.steps).permute(0, 3, 1, 2)
        for weight, bias, reach, more in self.decoder:
            steps = h.shape[3]
            h = F.conv2d(h, weight, bias, padding=(0, reach)).relu_()  # (B, 2C, 1, steps): even outputs, odd ones
            h = h.permute(0, 2, 3, 1).reshape(n, 1, 2 * steps, -1).permute(0, 3, 1, 2)  # interleaved: a view
            if more < 0:  # an even kernel: the transposed convolution's output is one step short of twice the input
                h = h[..., : 2 * steps + more]
        steps = min(h.shape[3], self.window_size)  # steps past the window are cut, as ConvAutoencoder.decode does
        rows = h.permute(0, 2, 3, 1)[:, 0, :steps].reshape(n * steps, -1)
        out = torch.addmm(self.out[1], rows, self.out[0]).view(n, steps, -1)
        if steps < self.window_size:  # and a short one repeats its last step
            out = torch.cat([out, out[:, -1:].expand(n, self.window_size - steps, out.shape[2])], 1)
        return out


def _as_2d(layer: nn.Conv1d) -> tuple[torch.Tensor, torch.Tensor]:
    """A 1-D convolution's weight as its 2-D twin's, in the channels_last memory format, and its bias."""
    return layer.weight.detach().unsqueeze(2).contiguous(memory_format=torch.channels_last), _bias(layer)


def _polyphase(layer: nn.ConvTranspose1d) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """A stride-2 transposed convolution as one plain 2-D convolution that computes its even and its odd output
    steps side by side as ``2 × out`` channels (whose channels-last memory is the interleaved output).

    Output step ``2j + p`` is ``Σ_m x[j - m] · w[2m + p + padding]`` over the kernel's taps of one parity: a plain
    convolution of ``x`` with those taps reversed. Both parities share one kernel of ``2 × reach + 1`` taps (zeros
    where a parity has none) and a padding of ``reach``. Returns the weight, the bias, ``reach``, and the output's
    length less twice the input's (``<= 0``)."""
    w = layer.weight.detach()  # (in, out, K)
    k, pad = w.shape[2], int(layer.padding[0])
    more = k - 2 * pad - 2 + layer.output_padding[0]  # (L - 1) * 2 - 2 * pad + k + output_padding - 2 * L
    assert layer.stride == (2,) and layer.dilation == (1,) and layer.groups == 1 and more <= 0, "ConvAutoencoder's"
    taps = [(p, m) for p in (0, 1) for m in range(-k, k + 1) if 0 <= 2 * m + p + pad < k]
    reach = max(abs(m) for _, m in taps)
    weight = w.new_zeros(2, w.shape[1], w.shape[0], 1, 2 * reach + 1)
    for p, m in taps:
        weight[p, :, :, 0, reach - m] = w[:, :, 2 * m + p + pad].t()
    return (weight.flatten(0, 1).contiguous(memory_format=torch.channels_last), _bias(layer).repeat(2), reach,
            more)


def _bias(layer: nn.Conv1d | nn.ConvTranspose1d | nn.Linear) -> torch.Tensor:
    assert layer.bias is not None, "every ConvAutoencoder layer has a bias"
    return layer.bias.detach().clone()
