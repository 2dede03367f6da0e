"""Training a bundle from a sample of windows (the reservoir's), the sibling of
:func:`aestream.training.build.train_bundle` for contiguous segments.

The windows are split at random (seeded) into a training part and a calibration part. The model is fitted on the
training part by :func:`aestream.training.fit.fit_scorer` (each window handed in as a segment of exactly one window,
so its early stopping watches the training windows); the channel scales and the alarm threshold are then
recalibrated on the calibration windows, which the model never saw.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from aestream.config import ModelConfig, StreamConfig, ThresholdConfig
from aestream.errors import TrainingError
from aestream.models.bundle import ModelBundle
from aestream.training.build import calibrate_threshold
from aestream.training.fit import fit_scorer

__all__ = ["train_bundle_from_windows"]


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
    """Train the configured family on normal windows ``(N, W, C)`` and calibrate channel scales and threshold.

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
    train, cal = w[order[n_cal:]], w[order[:n_cal]]
    result = fit_scorer(
        list(train), stream.channels, window_size=stream.window_size, family=model.family,
        latent_size=model.latent_size, hidden_size=model.hidden_size, family_params=model.family_params(),
        epochs=model.epochs, batch_size=model.batch_size, learning_rate=model.learning_rate,
        weight_decay=model.weight_decay, validation_fraction=model.validation_fraction, patience=model.patience,
        seed=model.seed, detrend_channels=model.detrend_channels, score_reduce=model.score_reduce,
        device=device or model.device, torch_threads=model.torch_threads,
    )
    scorer = result.scorer
    errors = scorer.raw_channel_errors(cal)
    if not np.isfinite(errors).all():
        raise FloatingPointError("the trained model reconstructs calibration windows as NaN/inf: lower "
                                 "model.learning_rate or check the reservoir for extreme values")
    scorer.channel_scale = np.maximum(errors.mean(axis=0), 1e-12)
    scores = scorer.score(cal).scores
    thr = calibrate_threshold(scores, threshold)
    metrics = {**result.metrics, "n_train_windows": len(train), "n_calibration_windows": len(cal),
               "threshold": thr, "calibration_alarm_rate": float(np.mean(scores > thr))}
    return ModelBundle(
        scorer=scorer,
        threshold=thr,
        channels=tuple(stream.channels),
        alarm={"k": threshold.k, "n": threshold.n, "smoothing": threshold.smoothing,
               "critical_ratio": threshold.critical_ratio},
        info={"created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "metrics": metrics,
              **(info or {})},
    )
