"""Own models stacked (:mod:`aestream.detect.stacked`) score as each model alone, for every family."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aestream.config import BaselinesConfig, ThresholdConfig
from aestream.detect import stacked
from aestream.detect.baselines import Baseline, SensorBaselines
from aestream.detect.features import Preprocessor
from aestream.detect.scoring import Scorer
from aestream.detect.stacked import ModelBank, channel_errors_many, channel_errors_of
from aestream.models import FAMILIES, build_model

W, C = 16, 3


def _scorer(family: str, seed: int, smooth: int = 1, detrend: tuple[bool, ...] = (False, True, False),
            **hyperparameters: object) -> Scorer:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(family, window_size=W, n_channels=C, latent_size=4, hidden_size=16, **hyperparameters)
    pre = Preprocessor(rng.normal(5.0, 1.0, C), rng.uniform(0.5, 2.0, C), np.array(detrend), smooth)
    return Scorer(model, pre, rng.uniform(0.5, 2.0, C))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("smooth", [1, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stacked_errors_are_each_models_own(family: str, smooth: int, dtype: type) -> None:
    scorers = [_scorer(family, seed, smooth) for seed in range(4)]
    rng = np.random.default_rng(0)
    windows = [rng.normal(5.0, 2.0, (n, W, C)).astype(dtype) for n in (3, 1, 7, 2)]
    banks: dict = {}
    got = channel_errors_many(scorers, windows, banks)
    for s, w, g in zip(scorers, windows, got):
        np.testing.assert_allclose(g, s.raw_channel_errors(w), rtol=1e-5, atol=1e-7)
    # a subset, in another order, through the same bank
    bank = next(iter(banks.values()))
    sub = channel_errors_many([scorers[2], scorers[0]], [windows[2], windows[0]], banks)
    assert next(iter(banks.values())) is bank
    np.testing.assert_allclose(sub[0], got[2], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sub[1], got[0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("family", "hyperparameters"), [(f, {}) for f in FAMILIES] + [
    ("sparse", {"penalty": "kl", "dropout": 0.2})])
def test_the_mlp_families_run_as_matrix_products_and_conv_through_vmap(family: str, hyperparameters: dict) -> None:
    scorers = [_scorer(family, seed, 3, **hyperparameters) for seed in range(3)]
    windows = [np.random.default_rng(i).normal(5.0, 2.0, (n, W, C)).astype(np.float32) for i, n in enumerate((2, 5, 1))]
    bank = ModelBank(scorers, W)
    assert (bank._layers is None) == (family == "conv")
    for s, w, g in zip(scorers, windows, bank.channel_errors(scorers, windows)):
        np.testing.assert_allclose(g, s.raw_channel_errors(w), rtol=1e-5, atol=1e-7)
    # a few of the bank's models (their weights gathered) and most of them (all run, the others on padding)
    for pick in ([1], [2, 0]):
        got = bank.channel_errors([scorers[i] for i in pick], [windows[i] for i in pick])
        for i, g in zip(pick, got):
            np.testing.assert_allclose(g, scorers[i].raw_channel_errors(windows[i]), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("family", ["vanilla", "conv"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("small_bank_bytes", [stacked.SMALL_BANK_BYTES, 0])
def test_a_steps_windows_as_one_array_score_as_each_model_alone(family: str, dtype: type, small_bank_bytes: int,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """ModelBank.errors_at: windows of many models interleaved (as a live step closes them), each by its own model:
    all of the bank's models, most of them (the MLP families run every model) and a few (their weights gathered,
    unless the bank is small: ``small_bank_bytes`` 0 gathers them in any bank)."""
    monkeypatch.setattr(stacked, "SMALL_BANK_BYTES", small_bank_bytes)
    scorers = [_scorer(family, seed, 3) for seed in range(10)]
    bank = ModelBank(scorers, W)
    rng = np.random.default_rng(7)
    for rows in ([3, 0, 1, 4, 2, 0, 0, 3, 5, 6, 7, 8, 9], [4, 1, 4, 2, 1, 9, 8], [2], [3, 1, 3, 3], [7, 7]):
        windows = rng.normal(5.0, 2.0, (len(rows), W, C)).astype(dtype)
        got = bank.errors_at(np.array(rows), windows)
        assert got.shape == (len(rows), C)
        for i, r in enumerate(rows):
            np.testing.assert_allclose(got[i], scorers[r].raw_channel_errors(windows[i : i + 1])[0],
                                       rtol=1e-5, atol=1e-7)


def test_a_steps_windows_as_one_array_go_model_by_model_when_the_models_differ() -> None:
    """channel_errors_of: one architecture through its bank; two (or a single model) as channel_errors_many."""
    a, b, odd = _scorer("vanilla", 1), _scorer("vanilla", 2), _scorer("vanilla", 3, smooth=2)
    windows = np.random.default_rng(5).normal(5.0, 1.0, (6, W, C)).astype(np.float32)
    for scorers, which in (([a, b], [1, 0, 1, 1, 0, 0]), ([a, b, odd], [2, 0, 1, 2, 2, 0]), ([odd], [0] * 6)):
        banks: dict = {}
        got = channel_errors_of(scorers, np.array(which), windows, banks)
        for i, k in enumerate(which):
            np.testing.assert_allclose(got[i], scorers[k].raw_channel_errors(windows[i : i + 1])[0],
                                       rtol=1e-5, atol=1e-7)
        assert len(banks) == (len({id(s) for s in scorers} - {id(odd)}) > 1)


def test_other_architectures_run_apart_and_a_new_model_joins_the_bank() -> None:
    a, b = _scorer("vanilla", 1), _scorer("vanilla", 2)
    odd = _scorer("vanilla", 3, smooth=2)  # another input smoothing: not stackable with a and b
    w = [np.random.default_rng(i).normal(5.0, 1.0, (2, W, C)).astype(np.float32) for i in range(3)]
    banks: dict = {}
    got = channel_errors_many([a, b, odd], w, banks)
    assert len(banks) == 1 and isinstance(next(iter(banks.values())), ModelBank)
    for s, x, g in zip((a, b, odd), w, got):
        np.testing.assert_allclose(g, s.raw_channel_errors(x), rtol=1e-5, atol=1e-7)
    c = _scorer("vanilla", 4)
    asked: list[int] = []

    def every() -> list:
        asked.append(1)
        return [a, b, c]

    got = channel_errors_many([a, c], w[:2], banks, every=every)
    assert next(iter(banks.values())).holds([a, b, c]) and len(asked) == 1
    np.testing.assert_allclose(got[1], c.raw_channel_errors(w[1]), rtol=1e-5, atol=1e-7)
    channel_errors_many([b, c], w[:2], banks, every=every)  # the bank holds them: the fleet is not walked again
    assert len(asked) == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_a_bank_grown_by_new_models_scores_as_one_built_with_them(family: str) -> None:
    scorers = [_scorer(family, seed, 3) for seed in range(5)]
    windows = [np.random.default_rng(i).normal(5.0, 2.0, (n, W, C)).astype(np.float32)
               for i, n in enumerate((2, 5, 1, 3, 4))]
    grown = ModelBank(scorers[:2], W)
    grown.extend(scorers[1:4])  # one already held: skipped
    grown.extend([scorers[4]])
    assert [id(s) for s in grown.scorers] == [id(s) for s in scorers]
    built = ModelBank(scorers, W)
    for pick in (range(5), [3], [4, 0], [0, 2, 3, 4]):
        got = grown.channel_errors([scorers[i] for i in pick], [windows[i] for i in pick])
        want = built.channel_errors([scorers[i] for i in pick], [windows[i] for i in pick])
        for i, g, v in zip(pick, got, want):
            np.testing.assert_array_equal(g, v)
            np.testing.assert_allclose(g, scorers[i].raw_channel_errors(windows[i]), rtol=1e-5, atol=1e-7)


def test_a_new_model_grows_the_bank_until_replaced_ones_are_as_many_as_the_live() -> None:
    live = [_scorer("vanilla", seed) for seed in range(2)]
    w = [np.random.default_rng(i).normal(5.0, 1.0, (2, W, C)).astype(np.float32) for i in range(2)]
    banks: dict = {}
    channel_errors_many(live, w, banks)
    bank = next(iter(banks.values()))
    live[1] = _scorer("vanilla", 10)  # a sensor's model replaced: its old row stays in the bank
    got = channel_errors_many(live, w, banks, every=lambda: live)
    assert next(iter(banks.values())) is bank and len(bank.scorers) == 3
    np.testing.assert_allclose(got[1], live[1].raw_channel_errors(w[1]), rtol=1e-5, atol=1e-7)
    live[1] = _scorer("vanilla", 11)  # a fourth row: twice the live models
    channel_errors_many(live, w, banks, every=lambda: live)
    assert next(iter(banks.values())) is bank and len(bank.scorers) == 4
    live[1] = _scorer("vanilla", 12)  # a fifth would be more: built again from the live ones
    channel_errors_many(live, w, banks, every=lambda: live)
    rebuilt = next(iter(banks.values()))
    assert rebuilt is not bank and [id(s) for s in rebuilt.scorers] == [id(s) for s in live]


def test_sensor_baselines_score_own_models_as_one_by_one() -> None:
    base = SensorBaselines(BaselinesConfig(mode="finetune"), ThresholdConfig(), W, 4)
    shared = _scorer("vanilla", 0)
    own = {f"s{i}": _scorer("vanilla", 10 + i) for i in range(3)}
    for s, sc in own.items():
        base.ready[s] = Baseline(sc.preprocessor.mean, sc.preprocessor.std, sc.channel_scale, 1.0, "v1", 400, sc)
    base.ready["plain"] = Baseline(np.full(C, 5.0), np.ones(C), np.ones(C), 1.0, "v1", 400)
    sensors = ["s0", "s1", "plain", "s0", "s2", "s1", "s0"]
    windows = np.random.default_rng(3).normal(5.0, 1.0, (len(sensors), W, C)).astype(np.float32)
    batch, errors = base.score(windows, sensors, shared)
    for i, s in enumerate(sensors):
        if s in own:
            want = own[s].raw_channel_errors(windows[i : i + 1])[0]
            np.testing.assert_allclose(errors[i], want, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(batch.scores[i], own[s].score(windows[i : i + 1]).scores[0], rtol=1e-5)


def test_many_windows_of_a_few_models_run_those_models_and_a_window_each_runs_the_small_bank(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A step of batched messages from two sensors (hundreds of windows each) runs their two models, not the
    whole bank padded to their count (that cost ~10× on a bench step); a window each from three of ten models runs
    the small bank whole (cheaper than gathering three models' weights)."""
    scorers = [_scorer("vanilla", seed, 3) for seed in range(10)]
    bank = ModelBank(scorers, W)
    ran: list[int] = []
    reconstruct = bank._reconstruct
    monkeypatch.setattr(bank, "_reconstruct", lambda x, rows: ran.append(x.shape[0]) or reconstruct(x, rows))
    rows = np.array([1, 4] * 150)
    windows = np.random.default_rng(3).normal(5.0, 2.0, (len(rows), W, C)).astype(np.float32)
    got = bank.errors_at(rows, windows)
    assert ran == [2]
    for i in (0, 1, 299):
        np.testing.assert_allclose(got[i], scorers[rows[i]].raw_channel_errors(windows[i : i + 1])[0],
                                   rtol=1e-5, atol=1e-7)
    ran.clear()
    bank.errors_at(np.array([1, 4, 6]), windows[:3])
    assert ran == [10]
