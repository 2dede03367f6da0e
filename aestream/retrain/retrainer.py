"""One retrain: snapshot the reservoir → train a candidate off the scoring thread → gate it → publish.

:meth:`Retrainer.run_once` never raises: every way it can end (published, rejected by the gate, failed on an
exception, a NaN loss or the timeout, skipped) is a :class:`RetrainOutcome` with its reason, logged. An exception
anywhere in the run (taking the lock, reading the store) makes it *failed*; one reading the serving version once
the run is over leaves its outcome (a published version stays published) with ``serving`` unknown and the error in
its reason. The current version keeps serving unless a candidate is published; the worker swaps it in between
batches.

``retrain.n_min_new_windows`` counts the windows offered to the reservoir since the last retrain snapshotted it; the
reservoir keeps that mark (``Reservoir.n_added_at_training``, saved with it), so a restarted worker does not count
the windows of the last retrain as new. The windows held that end after the newest window the serving model was
trained on (its ``info["retrain"]["newest_end_ms"]``) count too, and the smaller count holds: a version another
publisher made since the mark (``aestream retrain`` beside the trainer) used those windows already. Where there is
no mark (the fleet trainer reads its reservoir back from the topic; a file saved before the mark was kept), that
count alone holds; a serving model not made by a retrain imposes no minimum then.

The candidate trains in a spawned subprocess (``retrain.isolation = "process"``, the default) limited to
``retrain.torch_threads`` threads: it shares no GIL and no torch thread pool with scoring, and a timeout kills it.
It also ends (removing its exchange directory) when the worker that started it dies: a worker killed -9 cannot
kill it, and a training nobody waits for would only take CPU from the next worker.
``"thread"`` trains in a thread of this process (for tests and small deployments): a timed-out thread cannot be
killed, it is abandoned and its result ignored.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aestream.config import Config, ModelConfig, StreamConfig, ThresholdConfig
from aestream.errors import BundleError
from aestream.kafka.protocols import ModelStoreLike
from aestream.models.bundle import ModelBundle, load_bundle, save_bundle
from aestream.models.store import ModelStore
from aestream.ops.logs import configure_child_logging
from aestream.retrain.lock import TrainLock
from aestream.retrain.reservoir import Reservoir
from aestream.training.build import train_bundle_from_windows
from aestream.training.gate import run_gate

__all__ = ["RESERVOIR_FILE", "RetrainOutcome", "Retrainer", "Trainer", "open_reservoir"]

log = logging.getLogger(__name__)

RESERVOIR_FILE = "reservoir.npz"
Trainer = Callable[..., ModelBundle]


@dataclass(frozen=True)
class RetrainOutcome:
    """How a retrain ended: ``status`` is published, rejected, failed or skipped; ``reason`` says why."""

    status: str
    reason: str
    version: str | None = None
    serving: str | None = None
    gate: dict[str, Any] | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Failed(Exception):
    pass


def open_reservoir(cfg: Config) -> tuple[Reservoir, Path]:
    """The reservoir the config describes, loaded from ``paths.state_dir`` when a saved one is there."""
    r = cfg.retrain
    reservoir = Reservoir(r.n_reservoir_windows, cfg.stream.window_size, len(cfg.stream.channels),
                          half_life_s=r.half_life_s, max_age_s=r.max_age_s, seed=cfg.model.seed)
    path = Path(cfg.paths.state_dir) / RESERVOIR_FILE
    reservoir.load(path)
    return reservoir, path


class Retrainer:
    """Retrains from ``reservoir`` into ``store`` by the rules of ``cfg.retrain``. A directory store is guarded by a
    lock file (several processes may share it); a models topic has one publisher, ``aestream trainer``."""

    def __init__(self, cfg: Config, reservoir: Reservoir, store: ModelStoreLike, *,
                 trainer: Trainer = train_bundle_from_windows, lock: TrainLock | None = None,
                 on_outcome: Callable[[RetrainOutcome], None] | None = None) -> None:
        self.cfg = cfg
        self.reservoir = reservoir
        self.store = store
        self.trainer = trainer
        if lock is None and isinstance(store, ModelStore):
            lock = TrainLock(store.root, stale_s=cfg.retrain.timeout_s + 60.0)
        self.lock = lock
        self.last_outcome: RetrainOutcome | None = None
        self.on_outcome = on_outcome  # e.g. the metrics of the composition root
        self._cancel = threading.Event()

    def cancel(self) -> None:
        """Stop waiting for a training in flight (a subprocess is killed); used at shutdown."""
        self._cancel.set()

    def run_once(self, force: bool = False) -> RetrainOutcome:
        """One retrain; ``force`` ignores the new-data minimum. While a rollback holds (``aestream models
        rollback``) nothing is published, also when the hold came while the candidate trained."""
        t0 = time.monotonic()
        outcome = self._locked_run(force)
        try:
            outcome = dataclasses.replace(outcome, serving=self.store.current())
        except Exception as e:  # the run is over, and what it did stands: only the serving version is unknown
            outcome = dataclasses.replace(outcome, serving=None, reason=f"{outcome.reason}; reading the serving "
                                          f"version then raised {type(e).__name__}: {e}")
        outcome = dataclasses.replace(outcome, seconds=round(time.monotonic() - t0, 3))
        level = logging.INFO if outcome.status in ("published", "skipped") else logging.WARNING
        log.log(level, "retrain %s: %s (serving %s, %.1f s)", outcome.status, outcome.reason, outcome.serving,
                outcome.seconds)
        self.last_outcome = outcome
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome

    def _locked_run(self, force: bool) -> RetrainOutcome:
        """:meth:`_run` under the lock; any exception, the lock's included, is a failed outcome."""
        try:
            if self.lock is not None and not self.lock.acquire():
                return RetrainOutcome("skipped", f"another worker holds {self.lock.path}")
            try:
                return self._run(force)
            finally:
                if self.lock is not None:
                    self.lock.release()
        except _Failed as e:
            return RetrainOutcome("failed", str(e))
        except Exception as e:  # never into the worker: the current model keeps serving
            return RetrainOutcome("failed", f"{type(e).__name__}: {e}")

    def _run(self, force: bool) -> RetrainOutcome:
        r = self.cfg.retrain
        held = self.store.held()  # first: it reads a models topic to its end, and current() then names the latest
        current = self.store.current()
        if held:
            return RetrainOutcome("skipped", f"a rollback holds {held} in service: retraining publishes nothing "
                                  "until `aestream models resume` lifts it")
        self.reservoir.expire()
        n_added = self.reservoir.n_added
        sample = self.reservoir.snapshot()
        if len(sample) < r.n_min_windows:
            return RetrainOutcome("skipped", f"the reservoir holds {len(sample)} windows, fewer than "
                                  f"retrain.n_min_windows = {r.n_min_windows}")
        n_new = None if force else self._n_new(n_added, sample.end_ms, current)
        if n_new is not None and n_new < r.n_min_new_windows:
            return RetrainOutcome("skipped", f"{n_new} new windows since the last retrain, "
                                  f"fewer than retrain.n_min_new_windows = {r.n_min_new_windows}")
        serving = self._load_current(current)  # before training: a publisher that can read no version stops here
        n_hold = max(1, int(round(len(sample) * r.holdout_fraction)))
        holdout, train = sample.windows[-n_hold:], sample.windows[:-n_hold]
        info = {"trained_on": "reservoir", "retrain": {
            "n_windows": len(sample), "n_holdout": n_hold, "n_sensors": len(set(sample.sensors)),
            "oldest_end_ms": int(sample.end_ms[0]), "newest_end_ms": int(sample.end_ms[-1]),
            "previous_version": current}}
        candidate = self._train(train, info)
        self.reservoir.n_added_at_training = n_added  # saved with the reservoir: a restart keeps it
        if held := self.store.held():
            return _came_while_training(held, None)
        gate = run_gate(candidate, serving, holdout, tolerance=r.gate_tolerance, max_far=r.gate_max_far,
                        recall_tolerance=r.gate_recall_tolerance, seed=self.cfg.model.seed)
        if not gate.passed:
            return RetrainOutcome("rejected", f"gate refused the candidate: {gate.reason}", gate=gate.to_dict())
        candidate.info["retrain"]["gate"] = gate.to_dict()
        if held := self.store.held():
            return _came_while_training(held, gate.to_dict())
        version = self.store.publish(candidate)
        before = "no current model" if gate.current_error is None else f"{gate.current_error:.4g} for {current}"
        return RetrainOutcome("published", f"{version} passed the gate (held-out error {gate.candidate_error:.4g}, "
                              f"{before}; false alarms {gate.candidate_far:.4f})", version, gate=gate.to_dict())

    def _n_new(self, n_added: int, end_ms: np.ndarray, current: str | None) -> int | None:
        """Windows new since the last retrain (module docstring); ``None`` when there is nothing to count from."""
        mark = self.reservoir.n_added_at_training
        counts = [] if mark is None else [n_added - mark]
        if current is not None:
            try:
                through = int(self.store.meta(current)["info"]["retrain"]["newest_end_ms"])
                counts.append(int((end_ms > through).sum()))
            except (BundleError, KeyError, TypeError, ValueError):
                pass  # not made by a retrain (or unreadable: the gate will say so)
        return min(counts) if counts else None

    def _load_current(self, version: str | None) -> ModelBundle | None:
        """The serving model, to gate against; ``None`` when there is none, or it is unreadable while another
        version reads (the candidate is gated on its own, and may replace a corrupt model). When no version reads,
        this process's ``AESTREAM_MODEL_KEY`` is not the fleet's: publishing would put a model every worker
        refuses in service, and prune the fleet's good ones (:class:`_Failed`)."""
        if version is None:
            return None
        try:
            return self.store.load(version)
        except BundleError as e:
            error = e
        for other in reversed(self.store.versions()):
            if other == version:
                continue
            try:
                self.store.load(other)
            except BundleError:
                continue
            log.warning("current model unreadable, gating the candidate on its own: %s", error)
            return None
        raise _Failed(f"no version in the store reads with this process's AESTREAM_MODEL_KEY ({error}): is it the "
                      "fleet's key? Nothing is published; to change the fleet's key, set the new one everywhere and "
                      "publish a first model with it (aestream train)")

    def _train(self, windows: np.ndarray, info: dict[str, Any]) -> ModelBundle:
        r, c = self.cfg.retrain, self.cfg
        process = r.isolation == "process"
        log.info("training a candidate on %d windows of %d sensors (%s)", len(windows),
                 info["retrain"]["n_sensors"], "in a subprocess" if process else "in a thread")
        model = dataclasses.replace(c.model, family=r.family or c.model.family, epochs=r.epochs or c.model.epochs,
                                    torch_threads=r.torch_threads if process else 0)
        kwargs = {"calibration_fraction": r.calibration_fraction / (1 - r.holdout_fraction), "info": info}
        args = (self.trainer, windows, c.stream, model, c.threshold, kwargs)
        return self._in_process(*args) if process else self._in_thread(*args)

    def _in_thread(self, trainer: Trainer, windows: np.ndarray, stream: StreamConfig, model: ModelConfig,
                   threshold: ThresholdConfig, kwargs: dict[str, Any]) -> ModelBundle:
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["bundle"] = trainer(windows, stream, model, threshold, **kwargs)
            except BaseException as e:
                box["error"] = e

        t = threading.Thread(target=target, name="aestream-retrain", daemon=True)
        t.start()
        self._wait(t.is_alive, lambda: None)
        if "error" in box:
            e = box["error"]
            raise _Failed(f"training raised {type(e).__name__}: {e}")
        return box["bundle"]  # type: ignore[no-any-return]

    def _in_process(self, trainer: Trainer, windows: np.ndarray, stream: StreamConfig, model: ModelConfig,
                    threshold: ThresholdConfig, kwargs: dict[str, Any]) -> ModelBundle:
        state = Path(self.cfg.paths.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".retrain-", dir=state) as tmp:
            np.save(Path(tmp) / "windows.npy", windows)
            ctx = multiprocessing.get_context("spawn")
            proc = ctx.Process(target=_child, args=(tmp, trainer, stream, model, threshold, kwargs),
                               name="aestream-retrain", daemon=True)
            proc.start()
            try:
                self._wait(proc.is_alive, proc.kill)
            finally:
                if proc.is_alive():
                    proc.kill()
                proc.join(5)
            if proc.exitcode != 0:
                err = Path(tmp) / "error.txt"
                why = err.read_text() if err.is_file() else f"exit code {proc.exitcode}"
                raise _Failed(f"training raised {why}")
            return load_bundle(Path(tmp) / "bundle")

    def _wait(self, alive: Callable[[], bool], kill: Callable[[], None]) -> None:
        deadline = time.monotonic() + self.cfg.retrain.timeout_s
        while alive():
            if self._cancel.wait(0.2):
                kill()
                raise _Failed("cancelled at shutdown")
            if time.monotonic() > deadline:
                kill()
                raise _Failed(f"training timed out after {self.cfg.retrain.timeout_s:g} s (retrain.timeout_s): "
                              "raise it, or lower retrain.epochs or retrain.n_reservoir_windows")


def _came_while_training(held: str, gate: dict[str, Any] | None) -> RetrainOutcome:
    return RetrainOutcome("skipped", f"a rollback to {held} came while the candidate trained: it is not published "
                          "(`aestream models resume` lifts the hold)", gate=gate)


def _child(tmp: str, trainer: Trainer, stream: StreamConfig, model: ModelConfig, threshold: ThresholdConfig,
           kwargs: dict[str, Any]) -> None:
    """Entry point of the training subprocess: windows in, bundle (or error.txt) out, under ``tmp``."""
    configure_child_logging("training")  # what it logs, in the parent's form (JSON lines under --log-json)
    _end_with_parent(tmp)
    try:
        windows = np.load(Path(tmp) / "windows.npy")
        save_bundle(trainer(windows, stream, model, threshold, **kwargs), Path(tmp) / "bundle")
    except BaseException as e:
        (Path(tmp) / "error.txt").write_text(f"{type(e).__name__}: {e}")
        raise SystemExit(1) from None


def _end_with_parent(tmp: str) -> None:
    """In the training subprocess: exit, removing ``tmp``, as soon as the process that spawned it is gone."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        shutil.rmtree(tmp, ignore_errors=True)
        os._exit(1)

    threading.Thread(target=watch, name="aestream-retrain-watch", daemon=True).start()
