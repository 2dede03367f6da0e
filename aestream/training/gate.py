"""The validation gate a retrained candidate must pass before it is published.

Both models reconstruct the same held-out slice of recent normal windows. Their errors are compared in the
readings' own units, each channel divided by its variance on the slice, so models with different preprocessing
and channel scales are judged alike. The candidate passes when

* its error is at most ``(1 + tolerance)`` × the current model's,
* the share of held-out windows it scores over its own threshold is at most ``max_far``, and
* it still catches faults: the same held-out windows with synthetic faults injected (:func:`inject_faults`: a level
  shift, a spike, an oscillation, a channel decoupled from the others) are scored over its own threshold at least
  as often as the current model catches them, less ``recall_tolerance``. A candidate that has learned to
  reconstruct faults (trained on data an anomaly slipped into) loses recall there and is refused. Each model's
  recall counts only the windows it judges normal before the fault goes in (a fault it "catches" in a window it
  already alarmed on is no evidence), and the comparison is skipped when the current model alarms on more than
  ``max_far`` of the clean slice: after a regime change it flags everything and is no reference.

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

__all__ = ["FAULT_KINDS", "GateResult", "false_alarm_rate", "gate_reason", "inject_faults", "reconstruction_error",
           "run_gate"]

FAULT_KINDS = ("shift", "spike", "oscillation", "decoupling")


@dataclass(frozen=True)
class GateResult:
    """What the gate measured, and why it refused (``reason`` is ``None`` when the candidate passed)."""

    reason: str | None
    candidate_error: float
    current_error: float | None
    candidate_far: float
    current_far: float | None
    n_holdout: int
    candidate_recall: float | None = None
    current_recall: float | None = None

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


def inject_faults(windows: np.ndarray, seed: int = 0) -> np.ndarray:
    """A copy of ``windows`` ``(N, W, C)`` with one synthetic fault in each, the kinds of :data:`FAULT_KINDS` in
    turn, on a random channel, sized by that channel's spread over all the windows: a shift of 4 σ over the
    window's second half, a spike of 8 σ at one of its last readings, an oscillation of 3 σ amplitude, and the
    channel's readings replaced by another window's (decoupled from the other channels).

    >>> w = np.zeros((4, 10, 2)); w[..., 0] = np.arange(10); w[..., 1] = 1 + np.arange(10) % 2
    >>> f = inject_faults(w); f.shape, bool((f != w).any(axis=(1, 2)).all())
    ((4, 10, 2), True)
    """
    clean = np.asarray(windows, dtype=np.float64)
    x = clean.copy()
    n, w, c = x.shape
    rng = np.random.default_rng(seed)
    sd = np.maximum(x.reshape(-1, c).std(axis=0), 1e-6)
    for i in range(n):
        ch = int(rng.integers(c))
        kind = FAULT_KINDS[i % len(FAULT_KINDS)]
        if kind == "shift":
            x[i, w // 2 :, ch] += 4 * sd[ch] * rng.choice([-1, 1])
        elif kind == "spike":
            x[i, int(rng.integers(max(w - 5, 0), w)), ch] += 8 * sd[ch] * rng.choice([-1, 1])
        elif kind == "oscillation":
            x[i, :, ch] += 3 * sd[ch] * np.sin(2 * np.pi * np.arange(w) / max(w / 4, 2.0))
        else:
            # from the clean windows: another's readings with a fault of their own would be two faults in one
            other = clean[int(rng.integers(n)), ::-1, ch] if n > 1 else clean[i, ::-1, ch]
            x[i, :, ch] = other + (sd[ch] if np.allclose(other, x[i, :, ch]) else 0.0)
    return x


def detection_rate(bundle: ModelBundle, clean: np.ndarray, faulted: np.ndarray) -> float | None:
    """Share of faulted windows scored over the bundle's threshold, among those whose clean version it scores at
    or under it (its recall on the faults); ``None`` when it alarms on every clean window."""
    normal = bundle.scorer.score(np.asarray(clean, dtype=np.float64)).scores <= bundle.threshold
    if not normal.any():
        return None
    caught = ~(bundle.scorer.score(np.asarray(faulted, dtype=np.float64)[normal]).scores <= bundle.threshold)
    return float(np.mean(caught))


def gate_reason(candidate_error: float, current_error: float | None, candidate_far: float, *, tolerance: float,
                max_far: float, candidate_recall: float | None = None, current_recall: float | None = None,
                recall_tolerance: float = 0.05) -> str | None:
    """Why the candidate is refused, or ``None`` when it passes.

    >>> print(gate_reason(1.0, 1.0, 0.0, tolerance=0.05, max_far=0.01, candidate_recall=0.5, current_recall=0.9))
    catches 50.0 % of the synthetic faults on the held-out slice, the current model 90.0 % (tolerance 5 points)
    """
    if not np.isfinite(candidate_error):
        return f"reconstruction error on the held-out slice is {candidate_error} (not finite)"
    if current_error is not None and candidate_error > current_error * (1 + tolerance):
        return (f"reconstruction error {candidate_error:.4g} on the held-out slice exceeds the current model's "
                f"{current_error:.4g} × {1 + tolerance:g}")
    if candidate_far > max_far:
        return (f"false-alarm rate {candidate_far:.4f} on the held-out slice exceeds retrain.gate_max_far = "
                f"{max_far:g}")
    if candidate_recall is not None and current_recall is not None \
            and candidate_recall < current_recall - recall_tolerance:
        return (f"catches {100 * candidate_recall:.1f} % of the synthetic faults on the held-out slice, the current "
                f"model {100 * current_recall:.1f} % (tolerance {100 * recall_tolerance:g} points)")
    return None


def run_gate(candidate: ModelBundle, current: ModelBundle | None, holdout: np.ndarray, *, tolerance: float,
             max_far: float, recall_tolerance: float = 0.05, seed: int = 0) -> GateResult:
    """Measure both models on ``holdout`` (and on it with faults injected) and decide."""
    cand_err = reconstruction_error(candidate, holdout)
    cur_err = reconstruction_error(current, holdout) if current is not None else None
    cand_far = false_alarm_rate(candidate, holdout)
    cur_far = false_alarm_rate(current, holdout) if current is not None else None
    faulted = inject_faults(holdout, seed)
    cand_recall = detection_rate(candidate, holdout, faulted)
    reference = current is not None and cur_far is not None and cur_far <= max_far
    cur_recall = detection_rate(current, holdout, faulted) if current is not None and reference else None
    reason = gate_reason(cand_err, cur_err, cand_far, tolerance=tolerance, max_far=max_far,
                         candidate_recall=cand_recall, current_recall=cur_recall, recall_tolerance=recall_tolerance)
    return GateResult(reason, cand_err, cur_err, cand_far, cur_far, len(holdout), cand_recall, cur_recall)
