"""A sensor's own model: the shared model fine-tuned on the sensor's calibration readings (transfer learning).

The copy starts from the fleet's weights and learns on the sensor's first readings, standardised by their own
mean and deviation (over all of them, its operating point, as a shared-model baseline takes it; each deviation at
least :data:`FINETUNE_MIN_STD_FRACTION` of the shared model's), with early stopping
on their last ``model.validation_fraction`` of windows; the channel scales and the threshold are calibrated on those
validation windows, which the copy never trained on. Fine-tunes run on the worker's own thread, in slices of at most
``baselines.finetune_slice_ms`` between its steps, at most ``baselines.finetune_queue`` waiting (:class:`Finetuner`),
or in the step itself with ``baselines.finetune_blocking`` (deterministic replays, the evaluation).

Why slices and not a thread: a fine-tune is thousands of small torch calls, each taking and giving back the GIL. On a
thread beside the loop it competed with the loop for the GIL and a core, and a fleet starting up (50 sensors
fine-tuning at once) put the loop seconds behind its input. In slices the loop decides how much of its time goes to
them: all of it while no records wait (the poll does not block then), at most a slice per step under load.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from aestream.config import Config
from aestream.detect.baselines import Baseline, SensorBaselines
from aestream.detect.scoring import Scorer
from aestream.detect.thresholds import calibrate_threshold
from aestream.training.build import fit_from_config_steps
from aestream.training.fit import Steps, run_through

__all__ = ["Finetuner", "build_baselines", "finetune_baseline", "finetune_baseline_steps"]

log = logging.getLogger(__name__)

# A channel's own deviation is floored at this share of the shared model's: one steady through the calibration (an
# idle current, a closed valve) would otherwise be divided by ~0, and a later move of a hundredth of the fleet's
# spread scored ~1e7 × its threshold. Far below baselines.min_std_fraction, the "shared" mode's floor: at 0.1 here,
# F1 on SKAB's dev files fell from 0.82 to 0.78 (docs/benchmarks.md).
FINETUNE_MIN_STD_FRACTION = 0.01


def finetune_baseline_steps(runs: list[np.ndarray], shared: Scorer, cfg: Config,
                            model_version: str) -> Steps[tuple[Baseline, np.ndarray]]:
    """Fine-tune a copy of ``shared`` on a sensor's calibration ``runs`` ``(T, C)``, yielding after every
    optimiser step: its baseline with its own model, and the scores of its validation windows."""
    s = cfg.stream
    result = yield from fit_from_config_steps(runs, s.channels, s.window_size, cfg.model, device=str(shared.device),
                                              start_from=shared.model, epochs=cfg.baselines.finetune_epochs or None,
                                              scale_all_readings=True,
                                              min_std=FINETUNE_MIN_STD_FRACTION * shared.preprocessor.std)
    own = result.scorer
    pre = own.preprocessor
    threshold = calibrate_threshold(result.validation_scores, cfg.threshold)
    baseline = Baseline(pre.mean, pre.std, own.channel_scale, threshold, model_version, sum(len(r) for r in runs), own)
    return baseline, result.validation_scores


finetune_baseline = run_through(finetune_baseline_steps)
""":func:`finetune_baseline_steps` in one go."""

FinetuneSteps = Callable[[list[np.ndarray], Scorer, str], Steps[tuple[Baseline, np.ndarray]]]


class Finetuner:
    """Fine-tunes queued in order and run in slices of the caller's thread (:meth:`run`); at most ``max_pending``
    wait. :meth:`done` hands out the finished ones."""

    def __init__(self, fit: FinetuneSteps, max_pending: int) -> None:
        self.fit, self.max_pending = fit, max_pending
        self._pending: dict[str, Steps[tuple[Baseline, np.ndarray]]] = {}  # in submission order
        self._done: list[tuple[str, tuple[Baseline, np.ndarray]]] = []
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
        self._pending[sensor] = self.fit(runs, shared, model_version)
        return True

    def run(self, budget_s: float) -> None:
        """Work on the queued fine-tunes, oldest first, until ``budget_s`` has passed (at least one piece when any
        wait: an optimiser step, or a fine-tune's set-up) or none is left."""
        deadline = time.perf_counter() + budget_s
        while self._pending:
            sensor, steps = next(iter(self._pending.items()))
            try:
                next(steps)
            except StopIteration as finished:
                del self._pending[sensor]
                self._done.append((sensor, finished.value))
            except Exception as e:  # the sensor keeps its shared-model baseline
                del self._pending[sensor]
                log.error("fine-tune of %s failed, it stays on the shared model: %s: %s", sensor, type(e).__name__, e)
            if time.perf_counter() >= deadline:
                return

    def done(self) -> list[tuple[str, tuple[Baseline, np.ndarray]]]:
        """The fine-tunes finished since the last call."""
        out, self._done = self._done, []
        return out

    def forget(self, sensors: list[str]) -> None:
        gone = set(sensors)
        for s in gone:
            steps = self._pending.pop(s, None)
            if steps is not None:
                steps.close()
        self._done = [d for d in self._done if d[0] not in gone]

    def close(self) -> None:
        for steps in self._pending.values():
            steps.close()
        self._pending.clear()


def build_baselines(cfg: Config) -> SensorBaselines | None:
    """The per-sensor baselines ``cfg.baselines`` asks for (``None`` when ``mode = "off"``), for a worker: it reports
    each step's alarms, which keep a fault shorter than ``retrain.regime_change_after_s`` out of a fine-tune."""
    b, s = cfg.baselines, cfg.stream
    if b.mode == "off":
        return None

    def fit(runs: list[np.ndarray], shared: Scorer, version: str) -> Steps[tuple[Baseline, np.ndarray]]:
        return finetune_baseline_steps(runs, shared, cfg, version)

    blocking = b.mode == "finetune" and b.finetune_blocking
    background = Finetuner(fit, b.finetune_queue) if b.mode == "finetune" and not blocking else None
    return SensorBaselines(b, cfg.threshold, s.window_size, s.stride, s.stride_ms,
                           finetune=run_through(fit) if blocking else None, finetuner=background,
                           n_channels=len(s.channels), regime_change_after_s=cfg.retrain.regime_change_after_s)
