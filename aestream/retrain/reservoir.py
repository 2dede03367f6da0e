"""A bounded, recency-weighted reservoir of normal windows, persisted atomically so a restart keeps it.

Every admitted window gets the key ``end_s / tau + G`` with ``G`` a standard Gumbel draw and
``tau = half_life_s / ln 2``; the reservoir keeps the ``capacity`` largest keys. This is weighted sampling without
replacement with weights ``exp(end_s / tau)`` (the Gumbel-top-k form of Efraimidis & Spirakis' A-Res): a window
``half_life_s`` older than another is half as likely to be kept. Windows older than ``max_age_s`` (event time,
behind the newest window held) are dropped by :meth:`Reservoir.expire`. Which windows are *offered* is the
:class:`~aestream.retrain.stage.ReservoirStage`'s business.

The saved file records ``half_life_s``: loaded under another half-life, the keys are moved onto the new scale (each
window keeps its Gumbel draw), so new windows compete with the old ones as that half-life says. A file saved
without it (before it was recorded) gets its keys drawn afresh from the windows' end times. It also records
``n_added_at_training``, the count of windows offered when the last retrain snapshotted it (``None``: none did), so
a restart does not count the windows the last retrain saw as new.

>>> r = Reservoir(capacity=2, window_size=2, n_channels=1, half_life_s=1.0, max_age_s=100.0, seed=0)
>>> for t in range(5):
...     _ = r.add("s", t * 1000, np.full((2, 1), t, dtype=np.float32))
>>> len(r), r.n_added
(2, 5)
>>> r.snapshot().end_ms.tolist() == sorted(r.snapshot().end_ms.tolist())
True
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aestream.atomic import atomic_write
from aestream.errors import ReservoirError

__all__ = ["Reservoir", "Sample"]

log = logging.getLogger(__name__)

FORMAT = 1


@dataclass(frozen=True)
class Sample:
    """A copy of the reservoir's windows ``(N, W, C)``, oldest first, with their sensors and end times."""

    windows: np.ndarray
    sensors: tuple[str, ...]
    end_ms: np.ndarray

    def __len__(self) -> int:
        return len(self.windows)

    def take(self, idx: np.ndarray) -> Sample:
        """The windows at ``idx`` (kept in the given order)."""
        return Sample(self.windows[idx], tuple(self.sensors[i] for i in idx), self.end_ms[idx])


class Reservoir:
    """Holds at most ``capacity`` windows of ``window_size`` × ``n_channels``; thread-safe."""

    def __init__(
        self,
        capacity: int,
        window_size: int,
        n_channels: int,
        *,
        half_life_s: float,
        max_age_s: float,
        seed: int = 0,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"reservoir capacity {capacity} is invalid: use 1 or more windows")
        self.capacity = capacity
        self.window_size = window_size
        self.n_channels = n_channels
        self.half_life_s = half_life_s
        self.max_age_s = max_age_s
        self.n_added = 0
        self.n_added_at_training: int | None = None
        self._tau_ms = _tau_ms(half_life_s)
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._n = 0
        self._windows = np.zeros((capacity, window_size, n_channels), dtype=np.float32)
        self._end_ms = np.zeros(capacity, dtype=np.int64)
        self._keys = np.zeros(capacity, dtype=np.float64)
        self._sensors: list[str] = [""] * capacity

    def __len__(self) -> int:
        return self._n

    def _key(self, end_ms: int | float) -> float:
        """``end_s / tau`` plus a standard Gumbel draw."""
        u = max(float(self._rng.random()), 1e-300)
        return end_ms / self._tau_ms - math.log(-math.log(u)) if u < 1.0 else math.inf

    def add(self, sensor: str, end_ms: int, values: np.ndarray) -> bool:
        """Offer one window; returns whether it was kept."""
        key = self._key(end_ms)
        with self._lock:
            self.n_added += 1
            if self._n < self.capacity:
                slot = self._n
                self._n += 1
            else:
                slot = int(np.argmin(self._keys))
                if key <= self._keys[slot]:
                    return False
            self._windows[slot] = values
            self._end_ms[slot] = end_ms
            self._keys[slot] = key
            self._sensors[slot] = sensor
            return True

    def expire(self) -> int:
        """Drop windows more than ``max_age_s`` older than the newest one; returns how many went."""
        with self._lock:
            if self._n == 0:
                return 0
            end = self._end_ms[: self._n]
            keep = end >= end.max() - int(self.max_age_s * 1000)
            gone = int(self._n - keep.sum())
            if gone:
                self._compact(np.flatnonzero(keep))
            return gone

    def _compact(self, idx: np.ndarray) -> None:
        n = len(idx)
        self._windows[:n] = self._windows[idx]
        self._end_ms[:n] = self._end_ms[idx]
        self._keys[:n] = self._keys[idx]
        sensors = [self._sensors[i] for i in idx]
        self._sensors[:n] = sensors
        self._n = n

    def snapshot(self) -> Sample:
        """A copy of what is held, oldest first (ties by sensor)."""
        with self._lock:
            n = self._n
            order = np.lexsort((np.array(self._sensors[:n]), self._end_ms[:n])) if n else np.zeros(0, int)
            return Sample(self._windows[order].copy(), tuple(self._sensors[i] for i in order),
                          self._end_ms[order].copy())

    # -- persistence --------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path`` (``.npz``, atomically: temp file, fsync, rename) and a ``.json`` summary beside it."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            n = self._n
            meta: dict[str, Any] = {"format": FORMAT, "capacity": self.capacity, "window_size": self.window_size,
                                    "n_channels": self.n_channels, "n_added": self.n_added, "n_windows": n,
                                    "half_life_s": self.half_life_s, "n_added_at_training": self.n_added_at_training}
            arrays: dict[str, np.ndarray] = {
                "windows": self._windows[:n].copy(), "end_ms": self._end_ms[:n].copy(), "keys": self._keys[:n].copy(),
                "sensors": np.array(self._sensors[:n], dtype=str), "meta": np.array(json.dumps(meta))}
        atomic_write(out, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]
        if n:
            meta.update(oldest_end_ms=int(arrays["end_ms"].min()), newest_end_ms=int(arrays["end_ms"].max()),
                        n_sensors=len(set(arrays["sensors"].tolist())))
        atomic_write(out.with_suffix(".json"), lambda f: f.write(json.dumps(meta, indent=2).encode()))
        return out

    def load(self, path: str | os.PathLike[str]) -> bool:
        """Replace the content with the file's; ``False`` (content untouched) if there is no file or its windows
        have another shape than this reservoir's (a changed config: it starts empty, with a warning)."""
        src = Path(path)
        if not src.is_file():
            return False
        try:
            with np.load(src, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                windows, end_ms, keys = data["windows"], data["end_ms"], data["keys"]
                sensors = data["sensors"].tolist()
            half_life_s = None if meta.get("half_life_s") is None else float(meta["half_life_s"])
        except Exception as e:  # any unreadable piece: say which file and what to do
            raise ReservoirError(f"reservoir file {src} is unreadable ({type(e).__name__}: {e}): delete it to start "
                                 "with an empty reservoir") from None
        if windows.shape[1:] != (self.window_size, self.n_channels):
            log.warning("reservoir %s holds windows of %s readings × channels, the stream now makes %s: starting "
                        "empty (delete the file to silence this)", src, windows.shape[1:],
                        (self.window_size, self.n_channels))
            return False
        keys = self._rescaled(keys, end_ms, half_life_s, src)
        with self._lock:
            order = np.argsort(keys)[::-1][: self.capacity]
            n = len(order)
            self._windows[:n] = windows[order]
            self._end_ms[:n] = end_ms[order]
            self._keys[:n] = keys[order]
            self._sensors[:n] = [sensors[i] for i in order]
            self._n = n
            self.n_added = int(meta.get("n_added", n))
            trained = meta.get("n_added_at_training")
            self.n_added_at_training = None if trained is None else min(int(trained), self.n_added)
        log.info("reservoir %s loaded: %d windows", src, n)
        return True

    def _rescaled(self, keys: np.ndarray, end_ms: np.ndarray, half_life_s: float | None, src: Path) -> np.ndarray:
        """``keys`` saved under ``half_life_s`` on this reservoir's scale: the same Gumbel draws over the new
        ``tau``; drawn afresh when the file does not say its half-life."""
        if half_life_s == self.half_life_s:
            return keys
        if half_life_s is None:
            log.info("reservoir %s does not record its half-life: its windows' keys are drawn again for "
                     "retrain.half_life_s = %g s", src, self.half_life_s)
            return np.array([self._key(int(e)) for e in end_ms], dtype=np.float64)
        log.info("reservoir %s was saved with half_life_s = %g s: its keys are moved to retrain.half_life_s = %g s",
                 src, half_life_s, self.half_life_s)
        return np.asarray(keys - end_ms / _tau_ms(half_life_s) + end_ms / self._tau_ms, dtype=np.float64)


def _tau_ms(half_life_s: float) -> float:
    """The time constant of the keys' recency weight ``exp(end / tau)``, in ms, for a half-life in seconds."""
    return half_life_s * 1000.0 / math.log(2)
