"""From normal data to a publishable :class:`~aestream.models.bundle.ModelBundle`, driven by the config: the one way
to build a bundle, for ``aestream train``, the demo, the SKAB evaluation and scheduled retraining alike.

Every ``[model]`` setting reaches :func:`~aestream.training.fit.fit_scorer` through :func:`fit_from_config` alone
(or its generator, :func:`fit_from_config_steps`, for fine-tunes spread over the worker's steps),
and every bundle is put together by :func:`_bundle`, so a retrained model is built exactly like a trained one.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from aestream.config import ModelConfig, StreamConfig, ThresholdConfig
from aestream.detect.scoring import Scorer
from aestream.detect.thresholds import calibrate_threshold, causal_smooth
from aestream.errors import TrainingError
from aestream.models import Autoencoder
from aestream.models.bundle import ModelBundle
from aestream.training.fit import Steps, TrainResult, fit_scorer_steps, run_through

__all__ = ["fit_from_config", "fit_from_config_steps", "train_bundle", "train_bundle_from_windows"]


def fit_from_config_steps(
    segments: Sequence[np.ndarray],
    channels: Sequence[str],
    window_size: int,
    model: ModelConfig,
    device: str | None = None,
    detrend_channels: Sequence[str] | None = None,
    start_from: Autoencoder | None = None,
    epochs: int | None = None,
    validation: np.ndarray | None = None,
    scale_all_readings: bool = False,
    min_std: np.ndarray | None = None,
) -> Steps[TrainResult]:
    """:func:`~aestream.training.fit.fit_scorer_steps` with every ``[model]`` setting of the config."""
    return fit_scorer_steps(
        segments,
        channels,
        window_size=window_size,
        family=model.family,
        latent_size=model.latent_size,
        hidden_size=model.hidden_size,
        family_params=model.family_params(),
        epochs=model.epochs if epochs is None else epochs,
        batch_size=model.batch_size,
        learning_rate=model.learning_rate,
        weight_decay=model.weight_decay,
        validation_fraction=model.validation_fraction,
        patience=model.patience,
        seed=model.seed,
        detrend_channels=model.detrend_channels if detrend_channels is None else detrend_channels,
        input_smoothing=model.input_smoothing,
        score_reduce=model.score_reduce,
        device=device or model.device,
        torch_threads=model.torch_threads,
        start_from=start_from,
        validation=validation,
        scale_all_readings=scale_all_readings,
        min_std=min_std,
    )


fit_from_config = run_through(fit_from_config_steps)
""":func:`~aestream.training.fit.fit_scorer` with every ``[model]`` setting of the config, in one go."""


def train_bundle(
    segments: Sequence[np.ndarray],
    stream: StreamConfig,
    model: ModelConfig,
    threshold: ThresholdConfig,
    info: dict[str, Any] | None = None,
    device: str | None = None,
) -> ModelBundle:
    """Train the configured family on contiguous normal segments ``(T, C)``; the threshold is calibrated on the
    validation windows (the last ``model.validation_fraction`` of each segment, in time order)."""
    result = fit_from_config(segments, stream.channels, stream.window_size, model, device=device)
    return _bundle(result.scorer, result.validation_scores, result.metrics, stream, threshold, info)


def train_bundle_from_windows(
    windows: np.ndarray,
    stream: StreamConfig,
    model: ModelConfig,
    threshold: ThresholdConfig,
    *,
    calibration_fraction: float = 0.2,
    info: dict[str, Any] | None = None,
    device: str | None = None,
) -> ModelBundle:
    """Train on a sample of normal windows ``(N, W, C)`` (the reservoir's, oldest first): a seeded random
    ``calibration_fraction`` of them, kept in their order, recalibrates the channel scales and the threshold, which
    the model never saw; the rest train it.

    Raises :class:`FloatingPointError` when the loss or the calibration scores are not finite.
    """
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim != 3 or w.shape[1:] != (stream.window_size, len(stream.channels)):
        raise ValueError(f"windows of shape {w.shape} do not match stream.window_size = {stream.window_size} and "
                         f"{len(stream.channels)} channels: retrain with the config the windows were cut with")
    n_cal = max(1, int(round(len(w) * calibration_fraction)))
    if len(w) - n_cal < 2:
        raise TrainingError(f"{len(w)} windows are too few to train and calibrate on: collect more normal data "
                            "(retrain.n_min_windows)")
    order = np.random.default_rng(model.seed).permutation(len(w))
    train, cal = w[np.sort(order[n_cal:])], w[np.sort(order[:n_cal])]
    # the calibration windows validate too: split one by one, each window of the list would also validate itself
    result = fit_from_config(list(train), stream.channels, stream.window_size, model, device=device, validation=cal)
    scorer = result.scorer
    errors = scorer.raw_channel_errors(cal)
    if not np.isfinite(errors).all():
        raise FloatingPointError("the trained model reconstructs calibration windows as NaN/inf: lower "
                                 "model.learning_rate or check the reservoir for extreme values")
    scorer.channel_scale = np.maximum(errors.mean(axis=0), 1e-12)
    metrics = {**result.metrics, "n_train_windows": len(train), "n_calibration_windows": len(cal)}
    return _bundle(scorer, scorer.score(cal).scores, metrics, stream, threshold, info, consecutive=False)


def _bundle(scorer: Scorer, calibration_scores: np.ndarray, metrics: dict[str, Any], stream: StreamConfig,
            threshold: ThresholdConfig, info: dict[str, Any] | None, consecutive: bool = True) -> ModelBundle:
    """The bundle of a fitted ``scorer``, its threshold calibrated on ``calibration_scores`` of normal windows.
    Scores of windows that are not ``consecutive`` (a sample of a reservoir, of several sensors) are not smoothed:
    a mean over unrelated windows varies less than one over a sensor's next windows, which the worker takes, and
    would set the threshold too low. Their raw scores set it (as a rule higher: a moving average trims a tail)."""
    window_smoothing = threshold.smoothing if consecutive else 1
    thr = calibrate_threshold(calibration_scores, dataclasses.replace(threshold, smoothing=window_smoothing))
    smoothed = causal_smooth(calibration_scores, window_smoothing)
    metrics = {**metrics, "threshold": thr, "calibration_alarm_rate": float(np.mean(smoothed > thr))}
    return ModelBundle(
        scorer=scorer,
        threshold=thr,
        channels=tuple(stream.channels),
        alarm={"k": threshold.k, "n": threshold.n, "smoothing": threshold.smoothing,
               "critical_ratio": threshold.critical_ratio},
        info={"created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "metrics": metrics,
              **(info or {})},
    )
