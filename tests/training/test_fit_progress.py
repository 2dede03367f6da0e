"""Training's progress: a bar over the epochs on stderr inside ``progress_bars`` (what the commands use), log lines
outside it (the worker's scheduled retraining), and a picklable wrapper that carries the bar into a spawned
training process."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest

from aestream.training.fit import fit_scorer, progress_bars, with_progress

EPOCHS = 3


def _fit() -> object:
    segment = np.random.default_rng(0).normal(size=(120, 2))
    return fit_scorer([segment], ("a", "b"), window_size=8, family="vanilla", latent_size=2, hidden_size=8,
                      epochs=EPOCHS, patience=EPOCHS, device="cpu", torch_threads=1)


def test_inside_progress_bars_the_epochs_draw_a_bar_on_stderr_and_leave_stdout_alone(
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aestream.training.fit")
    with progress_bars(True):
        _fit()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "training:" in captured.err and f"/{EPOCHS} " in captured.err  # how far it redraws depends on the clock
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and "epoch" in r.getMessage()]


def test_outside_progress_bars_training_logs_and_draws_nothing(
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aestream.training.fit")
    _fit()
    assert "training:" not in capsys.readouterr().err
    assert next(r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch")).startswith(
        f"epoch 1/{EPOCHS}: validation loss")


def test_the_default_shows_a_bar_only_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bars():  # captured stderr is no terminal, as in a pipe, a log file or a test's subprocess
        _fit()
    assert "training:" not in capsys.readouterr().err


def _call_fit() -> object:
    return _fit()


def test_with_progress_survives_pickling_and_runs_its_function_inside_progress_bars(
        capsys: pytest.CaptureFixture[str]) -> None:
    wrapped = pickle.loads(pickle.dumps(with_progress(_call_fit, True)))
    wrapped()
    assert "training:" in capsys.readouterr().err
