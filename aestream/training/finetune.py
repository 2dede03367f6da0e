"""A sensor's own model: the shared model fine-tuned on the sensor's calibration readings (transfer learning).

The copy starts from the fleet's weights and learns on the sensor's first readings, standardised by their own
mean and deviation, with early stopping on their last ``model.validation_fraction`` of windows; the channel scales
and the threshold are calibrated on those validation windows, which the copy never trained on. Fine-tunes run off
the scoring thread, at most ``baselines.finetune_queue`` waiting (:class:`Finetuner`), or in the step itself with
``baselines.finetune_blocking`` (deterministic replays, the evaluation).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from aestream.config import Config
from aestream.detect.baselines import Baseline, Finetune, SensorBaselines
from aestream.detect.scoring import Scorer
from aestream.detect.thresholds import calibrate_threshold
from aestream.training.build import fit_from_config

__all__ = ["Finetuner", "build_baselines", "finetune_baseline"]

log = logging.getLogger(__name__)


def finetune_baseline(runs: list[np.ndarray], shared: Scorer, cfg: Config,
                      model_version: str) -> tuple[Baseline, np.ndarray]:
    """Fine-tune a copy of ``shared`` on a sensor's calibration ``runs`` ``(T, C)``: its baseline with its own
    model, and the scores of its validation windows."""
    s = cfg.stream
    result = fit_from_config(runs, s.channels, s.window_size, cfg.model, device=str(shared.device),
                             start_from=shared.model, epochs=cfg.baselines.finetune_epochs or None)
    own = result.scorer
    pre = own.preprocessor
    threshold = calibrate_threshold(result.validation_scores, cfg.threshold)
    baseline = Baseline(pre.mean, pre.std, own.channel_scale, threshold, model_version, sum(len(r) for r in runs), own)
    return baseline, result.validation_scores


class Finetuner:
    """Fine-tunes on one background thread; at most ``max_pending`` wait. :meth:`done` hands out the finished ones
    (in the worker's thread, between steps)."""

    def __init__(self, fit: Finetune, max_pending: int) -> None:
        self.fit, self.max_pending = fit, max_pending
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aestream-finetune")
        self._pending: dict[str, Future[tuple[Baseline, np.ndarray]]] = {}
        self.n_dropped = 0

    @property
    def n_pending(self) -> int:
        return len(self._pending)

    def submit(self, sensor: str, runs: list[np.ndarray], shared: Scorer, model_version: str) -> bool:
        """Queue ``sensor``'s fine-tune; ``False`` (and counted) when ``max_pending`` already wait."""
        if sensor in self._pending:
            return True
        if len(self._pending) >= self.max_pending:
            self.n_dropped += 1
            log.warning("fine-tune of %s not queued: %d already wait (baselines.finetune_queue); it is judged by the "
                        "shared model", sensor, len(self._pending))
            return False
        self._pending[sensor] = self._pool.submit(self.fit, runs, shared, model_version)
        return True

    def done(self) -> list[tuple[str, tuple[Baseline, np.ndarray]]]:
        """The fine-tunes finished since the last call; a failed one is logged and dropped."""
        out = []
        for sensor, fut in list(self._pending.items()):
            if not fut.done():
                continue
            del self._pending[sensor]
            try:
                out.append((sensor, fut.result()))
            except Exception as e:  # the sensor keeps its shared-model baseline
                log.error("fine-tune of %s failed, it stays on the shared model: %s: %s", sensor, type(e).__name__, e)
        return out

    def forget(self, sensors: list[str]) -> None:
        for s in sensors:
            fut = self._pending.pop(s, None)
            if fut is not None:
                fut.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def build_baselines(cfg: Config) -> SensorBaselines | None:
    """The per-sensor baselines ``cfg.baselines`` asks for (``None`` when ``mode = "off"``)."""
    b, s = cfg.baselines, cfg.stream
    if b.mode == "off":
        return None

    def fit(runs: list[np.ndarray], shared: Scorer, version: str) -> tuple[Baseline, np.ndarray]:
        return finetune_baseline(runs, shared, cfg, version)

    blocking = b.mode == "finetune" and b.finetune_blocking
    background = Finetuner(fit, b.finetune_queue) if b.mode == "finetune" and not blocking else None
    return SensorBaselines(b, cfg.threshold, s.window_size, s.stride, s.stride_ms,
                           finetune=fit if blocking else None, finetuner=background)
