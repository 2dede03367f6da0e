"""The SKAB scorer: point-wise F1/FAR/MAR and NAB changepoint scores, as the published SKAB/TSAD code computes them.

Pure functions over numpy arrays. Times may be in any unit (seconds, nanoseconds) as long as a window width is
given in the same unit. Details that follow the reference implementation (``tsad.evaluating``, used by SKAB):

* Predicted changepoints are the rising *and* falling edges of the 0/1 predictions: ``|diff|`` with the first
  point taking the first prediction's value.
* Each true changepoint opens a detection window ``[cp, cp + width]`` (both ends included). Overlapping windows
  are cut on the right ("cut right window"): the later one starts where the earlier ends, so two windows may
  share one instant, and a prediction exactly there is the first detection of both.
* The first predicted changepoint inside a window is a true positive earning the tanh reward read off a
  1000-point grid; predictions outside every window are false positives; later ones inside a window are ignored.
* Counts are pooled over files before any ratio is taken.

>>> m = match_changepoints(np.array([10.0]), np.array([0.0, 25.0, 40.0]), width=60.0)
>>> m.first_detection, m.n_false_positives
([25.0], 1)
>>> round(nab_score([m], "standard"), 2)
86.58
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "NAB_PROFILES",
    "ChangepointMatch",
    "Confusion",
    "binary_scores",
    "changepoint_edges",
    "confusion",
    "detection_delays",
    "detection_windows",
    "match_changepoints",
    "nab_reward",
    "nab_score",
]

#: Application profiles ``(A_tp, A_fp, A_fn)`` of the NAB score, as in SKAB.
NAB_PROFILES: dict[str, tuple[float, float, float]] = {
    "standard": (1.0, -0.11, -1.0),
    "lowfp": (1.0, -0.22, -1.0),
    "lowfn": (1.0, -0.11, -2.0),
}
_GRID = 1000
_X = np.linspace(-np.pi / 2, np.pi / 2, _GRID)


@dataclass(frozen=True)
class Confusion:
    """Point-wise counts; add them to pool over files."""

    tp: int = 0
    tn: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(self.tp + other.tp, self.tn + other.tn, self.fp + other.fp, self.fn + other.fn)


def confusion(true: np.ndarray, pred: np.ndarray) -> Confusion:
    """Point-wise confusion counts of 0/1 labels against 0/1 predictions of the same length.

    >>> confusion(np.array([0, 1, 1, 0]), np.array([1, 1, 0, 0]))
    Confusion(tp=1, tn=1, fp=1, fn=1)
    """
    t, p = np.asarray(true) == 1, np.asarray(pred) == 1
    if t.shape != p.shape:
        raise ValueError(f"labels {t.shape} and predictions {p.shape} differ in shape: give one prediction per point")
    return Confusion(int((t & p).sum()), int((~t & ~p).sum()), int((~t & p).sum()), int((t & ~p).sum()))


def binary_scores(c: Confusion) -> tuple[float, float, float]:
    """``(F1, FAR %, MAR %)`` with F1 = TP / (TP + (FP + FN)/2); an undefined ratio is ``nan``.

    >>> binary_scores(Confusion(tp=6, tn=2, fp=2, fn=0))
    (0.8571428571428571, 50.0, 0.0)
    """
    return (_ratio(c.tp, c.tp + (c.fp + c.fn) / 2), 100 * _ratio(c.fp, c.fp + c.tn),
            100 * _ratio(c.fn, c.fn + c.tp))


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def changepoint_edges(pred: np.ndarray) -> np.ndarray:
    """Predicted changepoints of 0/1 predictions: rising and falling edges, the first point if it is 1.

    >>> changepoint_edges(np.array([1, 1, 0, 0, 1, 1])).tolist()
    [1, 0, 1, 0, 1, 0]
    """
    p = np.asarray(pred).astype(np.int64)
    if len(p) == 0:
        return p
    return np.abs(np.diff(p, prepend=0))


def detection_windows(changepoints: np.ndarray, width: float) -> list[tuple[float, float]]:
    """Windows ``[cp, cp + width]`` to the right of sorted true changepoints, overlaps cut on the right.

    >>> detection_windows(np.array([0.0, 60.0, 90.0]), 60.0)
    [(0.0, 60.0), (60.0, 120.0), (120.0, 150.0)]
    """
    cps = np.asarray(changepoints, dtype=np.float64)
    if np.any(np.diff(cps) < 0):
        raise ValueError("true changepoint times are not sorted: sort each file by time first")
    windows = [[float(c), float(c + width)] for c in cps]
    for left, right in zip(windows, windows[1:]):
        if left[1] >= right[0]:
            right[0] = left[1]
    return [(a, b) for a, b in windows]


@dataclass(frozen=True)
class ChangepointMatch:
    """One file's detection windows, the first detection in each (``None``: missed), and the false positives."""

    windows: list[tuple[float, float]]
    first_detection: list[float | None]
    n_false_positives: int


def match_changepoints(true_cps: np.ndarray, pred_cps: np.ndarray, width: float) -> ChangepointMatch:
    """Match predicted changepoint times against windows of ``width`` after the true changepoint times."""
    windows = detection_windows(true_cps, width)
    pred = np.sort(np.asarray(pred_cps, dtype=np.float64))
    if not windows:
        return ChangepointMatch([], [], len(pred))
    first: list[float | None] = []
    outside = pred < windows[0][0]
    for i, (a, b) in enumerate(windows):
        inside = pred[(pred >= a) & (pred <= b)]
        first.append(float(inside[0]) if len(inside) else None)
        nxt = windows[i + 1][0] if i + 1 < len(windows) else np.inf
        outside |= (pred > b) & (pred < nxt)
    return ChangepointMatch(windows, first, int(outside.sum()))


def nab_reward(position: float, a_tp: float, a_fp: float) -> float:
    """Reward of a first detection at relative ``position`` in [0, 1] of its window, on SKAB's 1000-point grid.

    >>> nab_reward(0.0, 1.0, -0.11), nab_reward(1.0, 1.0, -0.11)
    (1.0, -0.11)
    """
    k = min(int(position * _GRID), _GRID - 1)
    half = (a_tp - a_fp) / 2
    return float(-half * np.tanh(_X[k]) / np.tanh(np.pi / 2) + half + a_fp)


def _raw_nab(m: ChangepointMatch, profile: str) -> tuple[float, float, float]:
    a_tp, a_fp, a_fn = NAB_PROFILES[profile]
    score = a_fp * m.n_false_positives
    for (a, b), det in zip(m.windows, m.first_detection):
        score += a_fn if det is None else nab_reward((det - a) / (b - a), a_tp, a_fp)
    n = len(m.windows)
    return score, n * a_fn, n * a_tp


def nab_score(matches: Sequence[ChangepointMatch], profile: str = "standard") -> float:
    """NAB score pooled over files: 100·(S − S_null)/(S_perfect − S_null); ``nan`` with no true changepoint."""
    if profile not in NAB_PROFILES:
        raise ValueError(f"unknown NAB profile {profile!r}: use one of {', '.join(NAB_PROFILES)}")
    s, s_null, s_perfect = np.sum([_raw_nab(m, profile) for m in matches], axis=0) if matches else (0, 0, 0)
    return _ratio(100 * (s - s_null), s_perfect - s_null)


def detection_delays(matches: Sequence[ChangepointMatch]) -> list[float]:
    """Time from each detected window's start to its first detection (in the times' unit).

    >>> detection_delays([match_changepoints(np.array([0.0, 100.0]), np.array([5.0]), 60.0)])
    [5.0]
    """
    return [det - a for m in matches for (a, _), det in zip(m.windows, m.first_detection) if det is not None]
