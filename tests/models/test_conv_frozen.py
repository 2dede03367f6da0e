"""The conv family's frozen forward pass (channels-last convolutions) against ``ConvAutoencoder.forward``, over
window sizes and kernels that cut, pad and round the decoder's output differently."""

from __future__ import annotations

import pytest
import torch

from aestream.models.conv import ConvAutoencoder, FrozenConv


@pytest.mark.parametrize(("window_size", "kernel_size", "filters", "n_channels"), [
    (32, 7, 32, 8),  # the shipped config's family settings at window 32
    (40, 7, 32, 8),  # ... and at the shipped window 40
    (33, 5, 16, 3),  # an odd window: the decoder's output is padded
    (17, 4, 8, 2),  # an even kernel
    (9, 3, 2, 5),
    (5, 7, 4, 1),  # a kernel longer than the window
    (64, 1, 4, 4),  # no padding at all
])
def test_frozen_conv_reconstructs_as_the_module(window_size: int, kernel_size: int, filters: int,
                                                n_channels: int) -> None:
    torch.manual_seed(window_size)
    model = ConvAutoencoder(window_size, n_channels, latent_size=6, filters=filters, kernel_size=kernel_size).eval()
    for p in model.parameters():  # weights well away from zero, so every ReLU and bias counts
        p.data.normal_(0.0, 0.5)
    x = torch.randn(37, window_size, n_channels)
    with torch.inference_mode():
        expected = model(x)
        got = FrozenConv(model)(x)
    assert got.shape == expected.shape
    # float32 rounding of sums in another order: measured against the output's scale (these weights make it large)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))


def test_frozen_is_the_module_forward_when_training_or_dropping_out() -> None:
    model = ConvAutoencoder(16, 2, filters=4, dropout=0.5)
    assert model.frozen() == model.forward  # training: dropout is live, nothing is folded
    assert isinstance(model.eval().frozen(), FrozenConv)
