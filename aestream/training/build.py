"""From normal readings to a publishable :class:`~aestream.models.bundle.ModelBundle`, driven by the config.

The one training entry point for ``aestream train``, the demo and scheduled retraining.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from aestream.config import ModelConfig, StreamConfig, ThresholdConfig
from aestream.detect.thresholds import causal_smooth, pot_threshold, quantile_threshold
from aestream.models.bundle import ModelBundle
from aestream.training.fit import TrainResult, fit_scorer

__all__ = ["calibrate_threshold", "fit_from_config", "train_bundle"]


def calibrate_threshold(validation_scores: np.ndarray, cfg: ThresholdConfig) -> float:
    """The alarm threshold for (causally smoothed) validation scores of normal windows.

    >>> calibrate_threshold(np.linspace(0, 1, 1001), ThresholdConfig(quantile=0.9, factor=2.0))
    1.8
    """
    smoothed = causal_smooth(validation_scores, cfg.smoothing)
    if cfg.method == "pot":
        return pot_threshold(smoothed, cfg.target_far, cfg.pot_initial_quantile) * cfg.factor
    return round(quantile_threshold(smoothed, cfg.quantile, cfg.factor), 12)


def fit_from_config(
    segments: Sequence[np.ndarray],
    channels: Sequence[str],
    window_size: int,
    model: ModelConfig,
    device: str | None = None,
    detrend_channels: Sequence[str] | None = None,
) -> TrainResult:
    """:func:`~aestream.training.fit.fit_scorer` with every ``[model]`` setting of the config."""
    return fit_scorer(
        segments,
        channels,
        window_size=window_size,
        family=model.family,
        latent_size=model.latent_size,
        hidden_size=model.hidden_size,
        family_params=model.family_params(),
        epochs=model.epochs,
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
    )


def train_bundle(
    segments: Sequence[np.ndarray],
    stream: StreamConfig,
    model: ModelConfig,
    threshold: ThresholdConfig,
    info: dict[str, Any] | None = None,
    device: str | None = None,
) -> ModelBundle:
    """Train the configured family on contiguous normal segments ``(T, C)`` and calibrate its threshold."""
    result = fit_from_config(segments, stream.channels, stream.window_size, model, device=device)
    thr = calibrate_threshold(result.validation_scores, threshold)
    val = causal_smooth(result.validation_scores, threshold.smoothing)
    metrics = {**result.metrics, "threshold": thr, "validation_alarm_rate": float(np.mean(val > thr))}
    return ModelBundle(
        scorer=result.scorer,
        threshold=thr,
        channels=tuple(stream.channels),
        alarm={"k": threshold.k, "n": threshold.n, "smoothing": threshold.smoothing,
               "critical_ratio": threshold.critical_ratio},
        info={"created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "metrics": metrics,
              **(info or {})},
    )
