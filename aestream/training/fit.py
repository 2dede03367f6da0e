"""Fitting an autoencoder on normal readings: preprocessing, validation split, early stopping, calibration.

Deterministic on CPU for a given seed. Progress goes to the log (one line every few epochs), or, inside
:func:`progress_bars` (what the commands use), to a bar over the epochs on stderr. :func:`fit_scorer_steps` is the
same fit as a generator that yields after its set-up and after every optimiser step, so a caller can spread it over
time slices of its own thread (the worker's fine-tunes, between its steps) and :func:`fit_scorer` runs it through.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
import sys
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from aestream.detect.features import Preprocessor
from aestream.detect.scoring import ScoreBatch, Scorer, resolve_device
from aestream.errors import DataError
from aestream.models import Autoencoder, build_model

__all__ = ["TrainResult", "fit_scorer", "fit_scorer_steps", "progress_bars", "run_steps", "run_through",
           "sliding_windows", "with_progress"]

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")
_PROGRESS: ContextVar[bool | None] = ContextVar("aestream_training_progress", default=False)


@contextmanager
def progress_bars(show: bool | None = None) -> Iterator[None]:
    """Within this block :func:`fit_scorer` draws a bar over its epochs on stderr instead of logging them:
    ``show=None`` when stderr is a terminal (the commands' choice), ``True`` always, ``False`` never. Outside it
    (the worker's scheduled retraining, the tests) training only logs.

    >>> with progress_bars(False):
    ...     _PROGRESS.get()
    False
    """
    token = _PROGRESS.set(show)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def with_progress(fn: Callable[..., T], show: bool | None = None) -> Callable[..., T]:
    """``fn`` run inside :func:`progress_bars`; picklable when ``fn`` is, so it can train in a spawned process
    (``aestream retrain`` in the foreground hands it to the retrainer)."""
    return functools.partial(_call_with_progress, fn, show)


def _call_with_progress(fn: Callable[..., T], show: bool | None, *args: Any, **kwargs: Any) -> T:
    with progress_bars(show):
        return fn(*args, **kwargs)


def sliding_windows(segment: np.ndarray, window_size: int, stride: int = 1) -> np.ndarray:
    """All windows ``(N, W, C)`` of one contiguous ``(T, C)`` segment, every ``stride`` rows.

    >>> sliding_windows(np.arange(10.0).reshape(5, 2), 3, 2).shape
    (2, 3, 2)
    """
    seg = np.asarray(segment, dtype=np.float32)
    if len(seg) < window_size:
        return np.zeros((0, window_size, seg.shape[1]), dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(seg, window_size, axis=0)  # (N, C, W)
    return np.ascontiguousarray(view[::stride].transpose(0, 2, 1))


@dataclass
class TrainResult:
    """A fitted scorer, its validation scores, and what training measured."""

    scorer: Scorer
    validation_scores: np.ndarray
    metrics: dict[str, Any]


Steps = Generator[None, None, T]
"""A computation that yields between its slices of work and returns its result (:func:`run_steps`)."""


def run_steps(steps: Steps[T]) -> T:
    """Run ``steps`` to the end in one go; its result.

    >>> def count() -> Steps[int]:
    ...     yield
    ...     return 2
    >>> run_steps(count())
    2
    """
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def run_through(steps: Callable[P, Steps[T]]) -> Callable[P, T]:
    """``steps`` as a function that runs its generator to the end (:func:`run_steps`)."""

    @functools.wraps(steps)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_steps(steps(*args, **kwargs))

    return run


def fit_scorer_steps(
    segments: Sequence[np.ndarray],
    channels: Sequence[str],
    *,
    window_size: int,
    family: str = "denoising",
    latent_size: int = 8,
    hidden_size: int = 64,
    family_params: dict[str, Any] | None = None,
    epochs: int = 60,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    validation_fraction: float = 0.2,
    patience: int = 8,
    seed: int = 0,
    detrend_channels: Sequence[str] = (),
    score_reduce: str = "mean",
    device: str = "auto",
    torch_threads: int = 0,
    input_smoothing: int = 1,
    start_from: Autoencoder | None = None,
    validation: np.ndarray | None = None,
    scale_all_readings: bool = False,
    min_std: np.ndarray | None = None,
) -> Steps[TrainResult]:
    """Train a ``family`` autoencoder on contiguous segments of normal readings, each ``(T, C)``.

    ``input_smoothing`` > 1 smooths every channel inside each window before the model sees it
    (:class:`~aestream.detect.features.Preprocessor`). ``start_from`` fine-tunes a copy of that model instead of
    training a fresh one of ``family``. ``validation``: windows ``(N, W, C)`` held out already, which validate
    (early stopping, the channel scales) instead of the last ``validation_fraction`` of each segment's windows;
    every window of the segments then trains. Windows cut already (a retrain's reservoir) need it: each one a
    segment, each would both train and validate.

    The input scaling is fitted on the readings the training windows span, so the validation windows are scaled as
    readings the fit never saw. ``scale_all_readings`` fits it on every reading of the segments instead: a sensor's
    own baseline, whose scaling is its operating point over all its calibration readings (as the shared model's
    baselines take it; on SKAB's dev files, fitted on the training part alone it gave F1 0.8115 against 0.8199
    over five seeds, docs/benchmarks.md). ``min_std`` (one a channel) floors its deviations.
    """
    t0 = time.monotonic()
    if torch_threads > 0:
        torch.set_num_threads(torch_threads)
    dev = resolve_device(device)
    if dev.type == "cpu":  # the CPU generator alone: torch.manual_seed also queues every GPU's (~0.2-0.4 ms a call)
        torch.random.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)
    segments = [np.asarray(s, dtype=np.float64) for s in segments if len(s) >= window_size]
    if not segments:
        raise DataError(f"no segment holds a full window of {window_size} readings: give more normal data")
    if validation is None:
        train_w, val_w, train_rows = _split(segments, window_size, validation_fraction)
    else:
        train_w = np.concatenate([sliding_windows(s, window_size) for s in segments])
        val_w = np.asarray(validation, dtype=np.float64)
        train_rows = np.concatenate(segments)
    scale_rows = np.concatenate(segments) if scale_all_readings else train_rows
    pre = Preprocessor.fit(scale_rows, channels, detrend_channels, smooth=input_smoothing)
    if min_std is not None:  # a sensor's own scaling: a channel steady through its calibration is not divided by ~0
        pre = dataclasses.replace(pre, std=np.maximum(pre.std, np.asarray(min_std, dtype=np.float64)))
    if start_from is not None:  # fine-tuning: a copy of a trained model learns on (transfer learning)
        model = copy.deepcopy(start_from).to(dev)
    else:
        model = build_model(family, window_size=window_size, n_channels=len(channels), latent_size=latent_size,
                            hidden_size=hidden_size, **(family_params or {})).to(dev)
    xt = torch.from_numpy(pre(train_w)).to(dev)
    xv = torch.from_numpy(pre(val_w)).to(dev)
    # a slice of its own: with the first optimiser step, a fine-tune's set-up (the model's copy, its windows) held
    # the worker's thread for 3.5–7 ms at once, where every other slice is one step of 1–2 ms
    yield
    best, history = yield from _optimise(model, xt, xv, epochs, batch_size, learning_rate, weight_decay, patience, seed)
    model.load_state_dict(best)
    model.eval()
    scorer = Scorer(model, pre, device=dev, score_reduce=score_reduce)
    val_errors = scorer.raw_channel_errors(val_w)
    scorer.channel_scale = np.maximum(val_errors.mean(axis=0), 1e-12)
    # scorer.score(val_w) without a second pass through the model
    validation_scores = ScoreBatch.of(val_errors / scorer.channel_scale, score_reduce).scores
    metrics = {
        "epochs_run": len(history),
        "best_val_loss": min(history),
        "val_loss_history": history,
        "n_train_windows": len(train_w),
        "n_val_windows": len(val_w),
        "train_seconds": round(time.monotonic() - t0, 3),
        "device": str(dev),
    }
    return TrainResult(scorer, validation_scores, metrics)


fit_scorer = run_through(fit_scorer_steps)
"""Train a ``family`` autoencoder on contiguous segments of normal readings: :func:`fit_scorer_steps` in one go."""


def _split(segments: list[np.ndarray], window_size: int,
           fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time-ordered split: the last ``fraction`` of each segment's windows validates, at least one of a segment of
    two or more; a segment of one window trains. No window does both, unless there is only one: when every
    segment is a single window, the last one validates instead. Also the readings the training windows span.

    >>> seg = lambda n: np.zeros((n, 1))
    >>> [len(a) for a in _split([seg(4), seg(5), seg(13)], 4, 0.3)]  # windows 1, 2 and 10; rows 4, 4 and 10
    [9, 4, 18]
    >>> [len(a) for a in _split([seg(4), seg(4)], 4, 0.3)], [len(a) for a in _split([seg(4)], 4, 0.3)]
    ([1, 1, 4], [1, 1, 4])
    """
    train, val, rows = [], [], []
    for seg in segments:
        w = sliding_windows(seg, window_size)
        cut = len(w) if len(w) == 1 else min(max(int(round(len(w) * (1 - fraction))), 1), len(w) - 1)
        train.append(w[:cut])
        val.append(w[cut:])
        rows.append(seg[:cut + window_size - 1])
    t, v = np.concatenate(train), np.concatenate(val)
    if not len(v):  # single windows only
        t, v, rows = (t[:-1], t[-1:], rows[:-1]) if len(t) > 1 else (t, t, rows)
    return t, v, np.concatenate(rows)


def _optimise(
    model: Autoencoder,
    xt: torch.Tensor,
    xv: torch.Tensor,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
    patience: int,
    seed: int,
) -> Steps[tuple[dict[str, torch.Tensor], list[float]]]:
    # fused: one kernel for every parameter's update (a vanilla fine-tune's step 2.7 → 1.5 ms on one CPU thread)
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay, fused=fused or None)
    gen = torch.Generator().manual_seed(seed)
    show = _PROGRESS.get()
    bar = tqdm(total=epochs, desc="training", unit="epoch", file=sys.stderr, leave=False, dynamic_ncols=True,
               disable=None if show is None else not show)
    with bar:
        return (yield from _epochs(model, opt, gen, xt, xv, epochs, batch_size, patience, bar))


def _epochs(model: Autoencoder, opt: torch.optim.Optimizer, gen: torch.Generator, xt: torch.Tensor,
            xv: torch.Tensor, epochs: int, batch_size: int, patience: int,
            bar: tqdm) -> Steps[tuple[dict[str, torch.Tensor], list[float]]]:
    best_loss, best_state, stale, history = math.inf, _copy_state(model), 0, []
    level = logging.INFO if bar.disable else logging.DEBUG  # a bar on the terminal says it already
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
            opt.zero_grad()
            loss = model.loss(xt[idx.to(xt.device)])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch}: lower "
                                         "model.learning_rate or check the data for extreme values")
            loss.backward()
            opt.step()
            yield
        model.eval()
        with torch.no_grad():
            val_loss = float(torch.nn.functional.mse_loss(model(xv), xv))
        if not math.isfinite(val_loss):  # no epoch could improve on it: the untrained weights would be kept
            raise DataError(f"validation loss became {val_loss} at epoch {epoch + 1}: the validation windows (the last "
                            "model.validation_fraction of the data) hold readings too extreme to reconstruct; drop "
                            "them from the data")
        history.append(round(val_loss, 6))
        bar.update()
        bar.set_postfix(val_loss=f"{val_loss:.5f}", refresh=False)
        if epoch % 10 == 0 or epoch == epochs - 1:
            log.log(level, "epoch %d/%d: validation loss %.5f", epoch + 1, epochs, val_loss)
        if val_loss < best_loss - 1e-7:
            best_loss, best_state, stale = val_loss, _copy_state(model), 0
        else:
            stale += 1
            if stale >= patience:
                log.log(level, "early stop at epoch %d: no improvement for %d epochs", epoch + 1, patience)
                break
    return best_state, history


def _copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
