"""One contract suite for every autoencoder family: shapes, finite scores, determinism, save/load, learning,
and a planted outlier scoring above normal windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aestream.models import FAMILIES, build_model
from aestream.models.bundle import ModelBundle, load_bundle, save_bundle
from aestream.models.contractive import ContractiveAutoencoder
from aestream.models.sparse import SparseAutoencoder
from aestream.training.fit import fit_scorer

W, C = 16, 3
CHANNELS = ("x", "y", "z")


def _normal_segment(n: int = 1200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.stack([np.sin(t / 5), np.cos(t / 7), 0.5 * np.sin(t / 5 + 1)], 1) + 0.05 * rng.standard_normal((n, 3))


# every family, and each way to sparsity of the sparse one: name -> (family, hyperparameters, latent size)
VARIANTS: dict[str, tuple[str, dict[str, object], int]] = {
    **{f: (f, {}, 4) for f in FAMILIES},
    "sparse-kl": ("sparse", {"penalty": "kl"}, 4),
    "sparse-weights": ("sparse", {"penalty": "weights", "l1": 1e-5}, 4),
    "sparse-dropout": ("sparse", {"penalty": "none", "dropout": 0.2}, 4),
    "sparse-overcomplete": ("sparse", {"penalty": "l1", "l1": 1e-2}, 2 * W * C),  # more code units than inputs
}


def _fit(variant: str, seed: int = 0, epochs: int = 15):  # type: ignore[no-untyped-def]
    family, params, latent = VARIANTS[variant]
    return fit_scorer([_normal_segment()], CHANNELS, window_size=W, family=family, latent_size=latent,
                      hidden_size=32, family_params=params, epochs=epochs, seed=seed, device="cpu", torch_threads=1)


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def family(request: pytest.FixtureRequest) -> str:
    """A variant name of :data:`VARIANTS` (a family, or a family with hyperparameters)."""
    return str(request.param)


@pytest.fixture(scope="module")
def fitted(family: str):  # type: ignore[no-untyped-def]
    return _fit(family)


def test_shapes_and_finite_scores(family: str) -> None:
    torch.manual_seed(0)
    name, params, latent = VARIANTS[family]
    model = build_model(name, window_size=W, n_channels=C, latent_size=latent, hidden_size=32, **params)
    x = torch.randn(7, W, C)
    assert model(x).shape == (7, W, C)
    assert model.encode(x).shape == (7, latent)
    assert model.channel_errors(x).shape == (7, C)
    score = model.score(x)
    assert score.shape == (7,) and torch.isfinite(score).all()
    assert torch.isfinite(model.loss(x))


def test_training_is_deterministic_for_a_seed(family: str, fitted) -> None:  # type: ignore[no-untyped-def]
    again = _fit(family)
    for a, b in zip(fitted.scorer.model.state_dict().values(), again.scorer.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_loss_decreases_on_a_small_fit(fitted) -> None:  # type: ignore[no-untyped-def]
    history = fitted.metrics["val_loss_history"]
    assert min(history) < 0.5 * history[0]


def test_a_planted_outlier_scores_above_normal_windows(fitted) -> None:  # type: ignore[no-untyped-def]
    normal = np.stack([_normal_segment(200, seed=5)[i : i + W] for i in range(0, 180, 4)])
    odd = normal[:1].copy()
    odd[0, 5:10, 1] += 3.0
    scores = fitted.scorer.score(np.concatenate([normal, odd])).scores
    assert np.isfinite(scores).all()
    assert scores[-1] > scores[:-1].max()
    shares = fitted.scorer.score(odd).shares[0]
    assert shares.argmax() == 1 and shares.sum() == pytest.approx(1.0)


def test_save_load_round_trip_on_cpu(fitted, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle = ModelBundle(fitted.scorer, threshold=1.5, channels=CHANNELS, version="v0042")
    save_bundle(bundle, tmp_path / "b")
    loaded = load_bundle(tmp_path / "b", device="cpu")
    windows = np.stack([_normal_segment(100, seed=9)[i : i + W] for i in range(0, 80, 8)])
    np.testing.assert_allclose(loaded.scorer.score(windows).scores, fitted.scorer.score(windows).scores, rtol=1e-6)
    assert (loaded.threshold, loaded.channels, loaded.version) == (1.5, CHANNELS, "v0042")
    assert loaded.family == fitted.scorer.model.family


def test_scoring_gives_the_plain_forward_pass_errors(fitted) -> None:  # type: ignore[no-untyped-def]
    """The scorer runs the family's frozen forward pass (the conv family's is a rewrite): the same errors."""
    scorer = fitted.scorer
    windows = np.random.default_rng(3).normal(size=(50, W, C)).astype(np.float32) * 2 + 0.5
    with torch.inference_mode():
        plain = scorer.model.channel_errors(torch.from_numpy(scorer.preprocessor(windows))).double().numpy()
    np.testing.assert_allclose(scorer.raw_channel_errors(windows), plain, rtol=1e-4, atol=1e-7)
    with torch.inference_mode():
        reconstruct = scorer.model(torch.from_numpy(scorer.preprocessor(windows))).double().numpy()
    np.testing.assert_allclose((scorer.reconstruct(windows) - scorer.preprocessor.mean) / scorer.preprocessor.std,
                               reconstruct, atol=1e-4)


def test_scoring_follows_new_weights(family: str) -> None:
    """A frozen forward pass copies the weights: loading others into the model must reach the scores."""
    from aestream.detect.features import Preprocessor
    from aestream.detect.scoring import Scorer

    name, params, latent = VARIANTS[family]
    torch.manual_seed(0)
    model = build_model(name, window_size=W, n_channels=C, latent_size=latent, hidden_size=32, **params)
    scorer = Scorer(model, Preprocessor(np.zeros(C), np.ones(C), np.zeros(C, dtype=bool)))
    windows = np.random.default_rng(4).normal(size=(20, W, C)).astype(np.float32)
    before = scorer.score(windows).scores
    torch.manual_seed(1)
    other = build_model(name, window_size=W, n_channels=C, latent_size=latent, hidden_size=32, **params)
    model.load_state_dict(other.state_dict())
    with torch.inference_mode():
        expected = other.eval().score(torch.from_numpy(windows)).double().numpy()
    np.testing.assert_allclose(scorer.score(windows).scores, expected, rtol=1e-4)
    assert not np.allclose(before, expected, rtol=1e-3)


def test_contractive_penalty_matches_autograd_jacobian() -> None:
    torch.manual_seed(0)
    model = ContractiveAutoencoder(window_size=4, n_channels=2, latent_size=3).double()
    x = torch.randn(5, 4, 2, dtype=torch.float64)
    expected = torch.stack([
        torch.autograd.functional.jacobian(lambda v: model.encode(v.view(1, 4, 2))[0], xi.flatten()).pow(2).sum()
        for xi in x
    ]).mean()
    torch.testing.assert_close(model.jacobian_penalty(x), expected, rtol=0, atol=1e-5)


def test_sparse_kl_penalty_is_zero_at_the_target_rate_and_positive_elsewhere() -> None:
    from aestream.models.sparse import kl_sparsity

    assert float(kl_sparsity(torch.full((8, 4), 0.05), 0.05)) == pytest.approx(0.0, abs=1e-6)
    assert float(kl_sparsity(torch.full((8, 4), 0.5), 0.05)) > 0.1
    model = SparseAutoencoder(W, C, penalty="kl")
    assert torch.isfinite(model.loss(torch.randn(4, W, C)))


def test_unknown_family_or_hyperparameter_is_named() -> None:
    with pytest.raises(ValueError, match="unknown model family 'lstm'"):
        build_model("lstm", window_size=W, n_channels=C)
    with pytest.raises(ValueError, match=r"bad hyperparameters for family 'conv'.*wobble"):
        build_model("conv", window_size=W, n_channels=C, wobble=1)


@torch.no_grad()
def test_each_sparse_penalty_adds_its_own_term() -> None:
    torch.manual_seed(0)
    x = torch.randn(16, W, C)
    for penalty, key in (("l1", "l1"), ("weights", "l1"), ("kl", "beta")):
        off = SparseAutoencoder(W, C, penalty=penalty, **{key: 0.0}).eval()
        on = SparseAutoencoder(W, C, penalty=penalty, **{key: 1.0}).eval()
        on.load_state_dict(off.state_dict())
        assert float(on.loss(x)) > float(off.loss(x)), penalty
    none = SparseAutoencoder(W, C, penalty="none").eval()
    assert float(none.loss(x)) == pytest.approx(float(torch.nn.functional.mse_loss(none(x), x)))


@torch.no_grad()
def test_sparse_dropout_acts_while_training_only() -> None:
    torch.manual_seed(0)
    model = SparseAutoencoder(W, C, penalty="none", dropout=0.5)
    x = torch.randn(16, W, C)
    model.eval()
    assert float(model.loss(x)) == float(model.loss(x))  # deterministic at inference
    model.train()
    assert float(model.loss(x)) != float(model.loss(x))  # a fresh mask each call
    with pytest.raises(ValueError, match=r"sparse dropout 1.0 must lie in \[0, 1\)"):
        SparseAutoencoder(W, C, dropout=1.0)
