"""The validation gate a retrained candidate must pass before it is published.

Both models reconstruct the same held-out slice of recent normal windows. Their errors are compared in the
readings' own units, each channel divided by its variance on the slice, so models with different preprocessing
and channel scales are judged alike. The candidate passes when

* its error is at most ``(1 + tolerance)`` × the current model's, and
* the share of held-out windows it scores over its own threshold is at most ``max_far``.

>>> gate_reason(1.0, 2.0, 0.0, tolerance=0.05, max_far=0.01) is None
True
>>> print(gate_reason(2.5, 2.0, 0.0, tolerance=0.05, max_far=0.01))
reconstruction error 2.5 on the held-out slice exceeds the current model's 2 × 1.05
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from aestream.models.bundle import ModelBundle

__all__ = ["GateResult", "false_alarm_rate", "gate_reason", "reconstruction_error", "run_gate"]


@dataclass(frozen=True)
class GateResult:
    """What the gate measured, and why it refused (``reason`` is ``None`` when the candidate passed)."""

    reason: str | None
    candidate_error: float
    current_error: float | None
    candidate_far: float
    current_far: float | None
    n_holdout: int

    @property
    def passed(self) -> bool:
        return self.reason is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reconstruction_error(bundle: ModelBundle, windows: np.ndarray) -> float:
    """Mean squared reconstruction error of ``windows`` in their own units, per channel over its variance."""
    x = np.asarray(windows, dtype=np.float64)
    recon = bundle.scorer.reconstruct(x)
    var = np.maximum(x.reshape(-1, x.shape[-1]).var(axis=0), 1e-12)
    return float((((recon - x) ** 2).mean(axis=(0, 1)) / var).mean())


def false_alarm_rate(bundle: ModelBundle, windows: np.ndarray) -> float:
    """Share of ``windows`` scored over the bundle's threshold."""
    scores = bundle.scorer.score(np.asarray(windows, dtype=np.float64)).scores
    return float(np.mean(~(scores <= bundle.threshold)))  # NaN counts as an alarm


def gate_reason(candidate_error: float, current_error: float | None, candidate_far: float, *, tolerance: float,
                max_far: float) -> str | None:
    """Why the candidate is refused, or ``None`` when it passes."""
    if not np.isfinite(candidate_error):
        return f"reconstruction error on the held-out slice is {candidate_error} (not finite)"
    if current_error is not None and candidate_error > current_error * (1 + tolerance):
        return (f"reconstruction error {candidate_error:.4g} on the held-out slice exceeds the current model's "
                f"{current_error:.4g} × {1 + tolerance:g}")
    if candidate_far > max_far:
        return (f"false-alarm rate {candidate_far:.4f} on the held-out slice exceeds retrain.gate_max_far = "
                f"{max_far:g}")
    return None


def run_gate(candidate: ModelBundle, current: ModelBundle | None, holdout: np.ndarray, *, tolerance: float,
             max_far: float) -> GateResult:
    """Measure both models on ``holdout`` and decide."""
    cand_err = reconstruction_error(candidate, holdout)
    cur_err = reconstruction_error(current, holdout) if current is not None else None
    cand_far = false_alarm_rate(candidate, holdout)
    cur_far = false_alarm_rate(current, holdout) if current is not None else None
    reason = gate_reason(cand_err, cur_err, cand_far, tolerance=tolerance, max_far=max_far)
    return GateResult(reason, cand_err, cur_err, cand_far, cur_far, len(holdout))
