"""The autoencoder families, one module each, over :mod:`aestream.models.base`."""

from __future__ import annotations

from typing import Any, Literal, get_args

from aestream.models.base import Autoencoder
from aestream.models.contractive import ContractiveAutoencoder
from aestream.models.conv import ConvAutoencoder
from aestream.models.denoising import DenoisingAutoencoder
from aestream.models.sparse import SparseAutoencoder
from aestream.models.vanilla import VanillaAutoencoder

__all__ = ["FAMILIES", "Autoencoder", "Family", "build_model"]

Family = Literal["vanilla", "sparse", "contractive", "denoising", "conv"]
"""The family names, as the config's ``model.family`` takes them (:data:`FAMILIES` maps each to its class)."""

FAMILIES: dict[str, type[Autoencoder]] = {
    cls.family: cls
    for cls in (VanillaAutoencoder, SparseAutoencoder, ContractiveAutoencoder, DenoisingAutoencoder, ConvAutoencoder)
}
assert tuple(FAMILIES) == get_args(Family), "a family class and the Family names disagree"


def build_model(family: str, **hyperparameters: Any) -> Autoencoder:
    """A fresh model of ``family``; unknown families or hyperparameters raise ``ValueError`` naming them."""
    try:
        cls = FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}: use one of {', '.join(FAMILIES)}") from None
    try:
        return cls(**hyperparameters)
    except TypeError as e:
        raise ValueError(f"bad hyperparameters for family {family!r}: {e}") from None
