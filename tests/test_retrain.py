"""Retraining: a candidate is published only through the gate; every failure leaves the current version serving."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aestream.commands.simulate import Plant
from aestream.config import Config
from aestream.errors import ConfigError
from aestream.models.bundle import ModelBundle
from aestream.models.store import ModelStore
from aestream.retrain.lock import TrainLock
from aestream.retrain.reservoir import Reservoir
from aestream.retrain.retrainer import Retrainer, open_reservoir
from aestream.retrain.scheduler import build_retraining, make_trigger
from aestream.training.build import train_bundle_from_windows
from aestream.training.fit import sliding_windows
from aestream.training.gate import gate_reason

CHANNELS = ("temperature", "pressure", "vibration", "current")


@pytest.fixture()
def cfg(tmp_path: Path) -> Config:
    return Config().replace(
        stream={"channels": CHANNELS, "window_size": 16, "stride": 4},
        model={"family": "vanilla", "epochs": 15, "hidden_size": 32, "latent_size": 6, "device": "cpu",
               "torch_threads": 1, "detrend_channels": (), "input_smoothing": 1},
        retrain={"enabled": True, "isolation": "thread", "n_min_windows": 100, "gate_max_far": 0.05, "epochs": 60,
                 "gate_tolerance": 0.1, "timeout_s": 120.0},
        paths={"model_dir": str(tmp_path / "models"), "state_dir": str(tmp_path / "state")},
    )


def _filled(cfg: Config, steps: int = 1600) -> Reservoir:
    """Windows (stride 4) of the plant's readings after those train_small fitted v0001 on."""
    plant = Plant(4, CHANNELS, seed=0)
    plant.signal(800)
    reservoir = Reservoir(5000, 16, 4, half_life_s=1e6, max_age_s=1e9)
    for i, series in enumerate(plant.signal(steps, step0=800)):
        for j, w in enumerate(sliding_windows(series, 16, 4)):
            reservoir.add(f"sensor-{i:02d}", 1_767_225_600_000 + (j * 4 + 15) * 1000, w)
    return reservoir


@pytest.fixture()
def store(cfg: Config, train_small: Any) -> ModelStore:
    s = ModelStore(cfg.paths.model_dir)
    s.publish(train_small(cfg))
    return s


def test_a_good_candidate_passes_the_gate_and_is_published_with_its_provenance(
        cfg: Config, store: ModelStore) -> None:
    outcome = Retrainer(cfg, _filled(cfg), store).run_once()
    assert outcome.status == "published", outcome.reason
    assert outcome.version == store.current() == "v0002" and outcome.serving == "v0002"
    info = store.load().info["retrain"]
    assert info["previous_version"] == "v0001" and info["gate"]["candidate_far"] <= 0.05
    assert info["n_windows"] == 4 * 397 and info["n_sensors"] == 4


def test_a_retrain_s_candidate_validates_on_windows_it_does_not_train_on(cfg: Config) -> None:
    import dataclasses

    windows = _filled(cfg, steps=400).snapshot().windows
    bundle = train_bundle_from_windows(windows, cfg.stream, dataclasses.replace(cfg.model, epochs=2), cfg.threshold)
    m = bundle.info["metrics"]  # each window its own segment once made each window validate itself too
    assert m["n_val_windows"] == m["n_calibration_windows"]
    assert m["n_train_windows"] + m["n_val_windows"] == len(windows)


def test_a_retrain_s_threshold_does_not_smooth_scores_of_windows_that_do_not_follow_each_other(cfg: Config) -> None:
    import dataclasses

    windows = _filled(cfg, steps=400).snapshot().windows  # a sample of 4 sensors' windows, not a sensor's run
    model = dataclasses.replace(cfg.model, epochs=2)
    plain = train_bundle_from_windows(windows, cfg.stream, model, cfg.threshold)
    smoothed = train_bundle_from_windows(windows, cfg.stream, model, dataclasses.replace(cfg.threshold, smoothing=10))
    assert smoothed.alarm["smoothing"] == 10, "the worker still smooths each sensor's live scores"
    assert smoothed.threshold == plain.threshold > 0, "a mean of unrelated windows' scores set it too low"
    assert smoothed.info["metrics"]["calibration_alarm_rate"] == plain.info["metrics"]["calibration_alarm_rate"]


def _raise(*args: Any, **kwargs: Any) -> ModelBundle:
    raise RuntimeError("disk on fire")


def _nan_loss(windows: np.ndarray, stream: Any, model: Any, threshold: Any, **kw: Any) -> ModelBundle:
    import dataclasses
    return train_bundle_from_windows(windows, stream, dataclasses.replace(model, learning_rate=1e12), threshold, **kw)


def _alarms_on_everything(*args: Any, **kwargs: Any) -> ModelBundle:
    bundle = train_bundle_from_windows(*args, **kwargs)
    bundle.threshold = 1e-9
    return bundle


def _slow(*args: Any, **kwargs: Any) -> ModelBundle:
    time.sleep(3.0)
    raise AssertionError("should have timed out")


@pytest.mark.parametrize(("trainer", "status", "reason"), [
    (_raise, "failed", "training raised RuntimeError: disk on fire"),
    (_nan_loss, "failed", "training raised FloatingPointError: training loss became nan"),
    (_alarms_on_everything, "rejected", "gate refused the candidate: false-alarm rate 1.0000 on the held-out slice "
                                        "exceeds retrain.gate_max_far = 0.05"),
    (_slow, "failed", "training timed out after 0.5 s (retrain.timeout_s)"),
])
def test_a_failed_or_rejected_retrain_leaves_the_current_version_serving(
        cfg: Config, store: ModelStore, trainer: Any, status: str, reason: str) -> None:
    cfg = cfg.replace(retrain={"timeout_s": 0.5 if trainer is _slow else 120.0})
    retrainer = Retrainer(cfg, _filled(cfg), store, trainer=trainer)
    outcome = retrainer.run_once()
    assert (outcome.status, outcome.serving) == (status, "v0001")
    assert reason in outcome.reason
    assert store.versions() == ["v0001"] and store.current() == "v0001"
    assert not retrainer.lock.path.exists(), "the lock is released whatever happened"


def test_a_candidate_worse_than_the_current_model_is_rejected(cfg: Config, store: ModelStore) -> None:
    weak = cfg.replace(retrain={"epochs": 1, "gate_tolerance": 0.0})
    outcome = Retrainer(weak, _filled(cfg), store).run_once()
    assert outcome.status == "rejected", outcome.reason
    assert "exceeds the current model's" in outcome.reason and store.current() == "v0001"


def test_in_a_subprocess_a_nan_loss_fails_and_a_good_candidate_publishes(cfg: Config, store: ModelStore) -> None:
    proc = cfg.replace(retrain={"isolation": "process"})
    bad = Retrainer(proc.replace(model={"learning_rate": 1e12}), _filled(cfg), store).run_once()
    assert bad.status == "failed" and "FloatingPointError: training loss became nan" in bad.reason
    assert store.current() == "v0001"
    good = Retrainer(proc, _filled(cfg), store).run_once()
    assert good.status == "published" and store.current() == "v0002", good.reason
    assert not list(Path(cfg.paths.state_dir).glob(".retrain-*")), "the exchange directory is removed"


def test_skips_say_why(cfg: Config, store: ModelStore) -> None:
    few = Retrainer(cfg.replace(retrain={"n_min_windows": 10_000}), _filled(cfg), store).run_once()
    assert few.status == "skipped" and "fewer than retrain.n_min_windows = 10000" in few.reason
    other = TrainLock(store.root, stale_s=60)
    assert other.acquire()
    held = Retrainer(cfg, _filled(cfg), store).run_once()
    assert held.status == "skipped" and "another worker holds" in held.reason
    other.release()
    store.publish(store.load())
    store.rollback("v0001")
    paused = Retrainer(cfg, _filled(cfg), store).run_once(force=True)
    assert paused.status == "skipped" and "a rollback holds v0001" in paused.reason, "also for `aestream retrain`"
    assert store.current() == "v0001"
    assert store.resume() == "v0001" and store.held() is None and store.current() == "v0001"
    assert Retrainer(cfg, _filled(cfg), store, trainer=_alarms_on_everything).run_once().status == "rejected"


def test_a_rollback_that_comes_while_the_candidate_trains_is_not_overwritten(cfg: Config, store: ModelStore
                                                                            ) -> None:
    store.publish(store.load())

    def roll_back_meanwhile(*args: object, **kwargs: object) -> object:
        store.rollback("v0001")  # the operator, while the candidate trains
        return train_bundle_from_windows(*args, **kwargs)  # type: ignore[arg-type]

    outcome = Retrainer(cfg, _filled(cfg), store, trainer=roll_back_meanwhile).run_once()
    assert outcome.status == "skipped" and "came while the candidate trained" in outcome.reason, outcome
    assert store.current() == "v0001" and store.versions() == ["v0001", "v0002"]


def test_no_new_data_since_the_last_retrain_is_a_skip(cfg: Config, store: ModelStore) -> None:
    retrainer = Retrainer(cfg, _filled(cfg), store, trainer=_alarms_on_everything)
    assert retrainer.run_once().status == "rejected"
    again = retrainer.run_once()
    assert again.status == "skipped" and "0 new windows since the last retrain" in again.reason


def test_build_retraining_wires_stage_scheduler_and_a_persisted_reservoir(cfg: Config, store: ModelStore) -> None:
    assert build_retraining(cfg.replace(retrain={"enabled": False}), store) is None
    retraining = build_retraining(cfg.replace(retrain={"interval_s": 3600.0}), store)
    assert retraining is not None
    retraining.start()
    retraining.stage.reservoir.add("s", 0, np.zeros((16, 4), np.float32))
    retraining.close()
    reloaded, path = open_reservoir(cfg)
    assert len(reloaded) == 1 and path.name == "reservoir.npz"


def test_a_bad_crontab_is_a_config_error_naming_the_key(cfg: Config) -> None:
    with pytest.raises(ConfigError, match=r"retrain.cron = 'every day' is invalid .*five crontab fields"):
        make_trigger(cfg.replace(retrain={"schedule": "cron", "cron": "every day"}).retrain)


@pytest.mark.parametrize(("cron", "days"), [
    ("0 3 * * *", ["Thu 01", "Fri 02", "Sat 03", "Sun 04", "Mon 05", "Tue 06"]),
    ("0 3 * * 0", ["Sun 04", "Sun 11", "Sun 18"]),
    ("0 3 * * 7", ["Sun 04", "Sun 11", "Sun 18"]),
    ("0 3 * * 1-5", ["Thu 01", "Fri 02", "Mon 05", "Tue 06", "Wed 07", "Thu 08"]),
    ("0 3 * * 5-7", ["Fri 02", "Sat 03", "Sun 04", "Fri 09"]),
    ("0 3 * * SAT,mon", ["Sat 03", "Mon 05", "Sat 10"]),
    ("0 3 * * */3", ["Sat 03", "Sun 04", "Wed 07", "Sat 10", "Sun 11"]),  # crontab's 0, 3, 6
    ("0 3 1,15 * 1", ["Thu 01", "Mon 05", "Mon 12", "Thu 15", "Mon 19"]),  # either day field, as crontab
    # a field starting with * is not restricted, as crontab reads it (a step too): both day fields then
    ("0 3 1-15 * */2", ["Thu 01", "Sat 03", "Sun 04", "Tue 06", "Thu 08", "Sat 10", "Sun 11", "Tue 13", "Thu 15",
                        "Sun 01"]),
    ("0 3 */2 * 1", ["Mon 05", "Mon 19", "Mon 09", "Mon 23", "Mon 09"]),  # odd days that are Mondays
])
def test_retrain_cron_fires_on_the_days_crontab_would(cfg: Config, cron: str, days: list[str]) -> None:
    import datetime as dt

    trigger = make_trigger(cfg.replace(retrain={"schedule": "cron", "cron": cron}).retrain)
    now, fired = dt.datetime(2025, 12, 31, 12, tzinfo=dt.timezone.utc), []  # January 2026 begins on a Thursday
    for _ in days:
        now = trigger.get_next_fire_time(None, now)
        fired.append(now.strftime("%a %d"))
        assert now.strftime("%H:%M") == "03:00"
        now += dt.timedelta(seconds=1)
    assert fired == days


def test_gate_reason_passes_equal_or_better_and_refuses_non_finite() -> None:
    assert gate_reason(1.0, 1.0, 0.0, tolerance=0.0, max_far=0.01) is None
    assert gate_reason(1.0, None, 0.0, tolerance=0.0, max_far=0.01) is None
    assert "not finite" in str(gate_reason(float("nan"), 1.0, 0.0, tolerance=0.0, max_far=0.01))


def test_the_gate_refuses_a_candidate_that_no_longer_catches_faults(cfg: Config, store: ModelStore) -> None:
    import copy

    from aestream.training.gate import inject_faults, run_gate

    serving = store.load()
    holdout = _filled(cfg, steps=400).snapshot().windows
    blind = copy.copy(serving)
    blind.threshold = serving.threshold * 1e6  # as if calibrated on data a fault slipped into: nothing alarms
    refused = run_gate(blind, serving, holdout, tolerance=0.05, max_far=0.05)
    assert refused.current_recall is not None and refused.current_recall > 0.5, refused
    assert refused.candidate_recall is not None and refused.candidate_recall < 0.1 and refused.candidate_far == 0.0
    assert not refused.passed and "of the synthetic faults" in str(refused.reason)
    same = run_gate(serving, serving, holdout, tolerance=0.05, max_far=0.05)
    assert same.passed and same.candidate_recall == same.current_recall, same
    faulted = inject_faults(holdout)
    assert faulted.shape == holdout.shape and (faulted != holdout).any(axis=(1, 2)).all(), "one fault per window"


def test_a_stale_lock_is_broken_once_and_a_fresh_one_taken_meanwhile_is_not(tmp_path: Path) -> None:
    crashed = TrainLock(tmp_path, stale_s=60)
    assert crashed.acquire()
    old = time.time() - 3600
    os.utime(crashed.path, (old, old))  # its holder died an hour ago
    a, b = TrainLock(tmp_path, stale_s=60), TrainLock(tmp_path, stale_s=60)
    assert a.acquire() and not b.acquire(), "the stale lock is broken by one, the fresh one is respected"
    real_read = Path.read_text
    calls = {"n": 0}

    def swapped(self: Path, *args: Any, **kwargs: Any) -> str:
        # between b judging the lock stale and moving it aside, the stale lock is replaced by a fresh one (a's)
        text = real_read(self, *args, **kwargs)
        calls["n"] += 1
        return text.replace(a._token, "the-token-b-judged") if calls["n"] == 1 and a._token else text

    a.release()
    assert a.acquire()
    os.utime(a.path, (old, old))  # looks stale to b by its age...
    Path.read_text = swapped  # type: ignore[method-assign]
    try:
        assert not b.acquire(), "...but the lock b moved aside is not the one it judged: given back"
    finally:
        Path.read_text = real_read  # type: ignore[method-assign]
    assert json.loads(a.path.read_text())["token"] == a._token and not list(tmp_path.glob("*.stale-*"))


def _crashed_lock(directory: Path) -> Path:
    """A retrain lock whose holder, on another host, died an hour ago: stale to a ``TrainLock(stale_s=60)``."""
    lock = directory / ".retrain.lock"
    lock.write_text(json.dumps({"token": "crashed", "host": "another-host", "pid": 1}))
    old = time.time() - 3600
    os.utime(lock, (old, old))
    return lock


def test_two_workers_breaking_one_stale_lock_at_once_do_not_both_take_it(tmp_path: Path) -> None:
    import threading

    lock = _crashed_lock(tmp_path)
    a, b = TrainLock(tmp_path, stale_s=60), TrainLock(tmp_path, stale_s=60)
    b_inside, a_done = threading.Event(), threading.Event()
    got: dict[str, bool] = {}
    real_read = Path.read_text

    def paused(self: Path, *args: Any, **kwargs: Any) -> str:
        # b, inside its acquire (judging or breaking the stale lock), loses the core: a runs its own acquire
        if threading.current_thread().name == "b" and not b_inside.is_set():
            b_inside.set()
            a_done.wait(1.0)
        return real_read(self, *args, **kwargs)

    def take(name: str, which: TrainLock) -> None:
        got[name] = which.acquire()
        if name == "a":
            a_done.set()

    Path.read_text = paused  # type: ignore[method-assign]
    try:
        tb = threading.Thread(target=take, args=("b", b), name="b")
        tb.start()
        assert b_inside.wait(5.0)
        ta = threading.Thread(target=take, args=("a", a), name="a")
        ta.start()
        ta.join(10.0)
        tb.join(10.0)
    finally:
        Path.read_text = real_read  # type: ignore[method-assign]
    assert sorted(got.values()) == [False, True], f"one of the two takes the lock, not {got}"
    holder = a if got["a"] else b
    assert json.loads(lock.read_text())["token"] == holder._token and not list(tmp_path.glob("*.stale-*"))


def test_a_lock_put_back_by_a_breaker_is_not_taken_meanwhile_by_a_third(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    lock = _crashed_lock(tmp_path)
    takers = {name: TrainLock(tmp_path, stale_s=60) for name in "abc"}
    at_rename, a_done, renamed, c_done = (threading.Event() for _ in range(4))
    got: dict[str, bool] = {}
    real_rename = os.rename

    def paused(src: Any, dst: Any) -> None:
        # b judged the crashed lock stale; a breaks it and takes a fresh one before b moves "it" aside, and c takes
        # the lock while b's put-back of a's lock has yet to come
        if threading.current_thread().name == "b" and not at_rename.is_set():
            at_rename.set()
            a_done.wait(1.0)
            real_rename(src, dst)
            renamed.set()
            c_done.wait(1.0)
            return
        real_rename(src, dst)

    def take(name: str, then: threading.Event | None) -> None:
        got[name] = takers[name].acquire()
        if then is not None:
            then.set()

    monkeypatch.setattr(os, "rename", paused)
    threads = {"b": threading.Thread(target=take, args=("b", None), name="b")}
    threads["b"].start()
    assert at_rename.wait(5.0)
    threads["a"] = threading.Thread(target=take, args=("a", a_done), name="a")
    threads["a"].start()
    assert renamed.wait(5.0)
    threads["c"] = threading.Thread(target=take, args=("c", c_done), name="c")
    threads["c"].start()
    for t in threads.values():
        t.join(10.0)
    assert sum(got.values()) == 1, f"one of the three takes the lock, not {got}"
    holder = next(takers[name] for name, took in got.items() if took)
    assert json.loads(lock.read_text())["token"] == holder._token and not list(tmp_path.glob("*.stale-*"))


def test_two_publishers_never_write_the_same_version(tmp_path: Path, cfg: Config, train_small: Any) -> None:
    import threading

    bundle = train_small(cfg)
    stores = [ModelStore(tmp_path / "shared") for _ in range(4)]
    versions: list[str] = []
    threads = [threading.Thread(target=lambda s=s: versions.append(s.publish(bundle))) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == ["v0001", "v0002", "v0003", "v0004"]
    assert stores[0].versions() == sorted(versions) and not list((tmp_path / "shared").glob(".v*"))


def test_a_lock_whose_holder_on_this_host_is_gone_is_broken_at_once(tmp_path: Path) -> None:
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                              capture_output=True, text=True).stdout)  # a worker killed -9 while it trained

    def held_by(**holder: object) -> None:
        (tmp_path / ".retrain.lock").write_text(json.dumps({"token": "t", "host": socket.gethostname(),
                                                            "pidns": os.readlink("/proc/self/ns/pid"), **holder}))

    for holder in ({"pid": gone}, {"pid": os.getpid(), "process": "the process before a restart, same pid"}):
        held_by(**holder)
        lock = TrainLock(tmp_path, stale_s=3600)
        assert lock.acquire(), f"held by {holder}: broken, not waited on for an hour"
        lock.release()
    for holder in ({"pid": gone}, {"pid": os.getpid(), "process": "another container's pid 1"}):
        held_by(**holder, pidns="pid:[another container's]")  # one host name, another PID namespace
        assert not TrainLock(tmp_path, stale_s=3600).acquire(), f"{holder} in another PID namespace: not gone"
    held_by(pid=gone, host="another-host")
    assert not TrainLock(tmp_path, stale_s=3600).acquire(), "another host's process: only its age breaks the lock"
    (tmp_path / ".retrain.lock").unlink()
    live = TrainLock(tmp_path, stale_s=3600)
    assert live.acquire() and not TrainLock(tmp_path, stale_s=3600).acquire(), "a live holder keeps it"


def test_a_restart_does_not_count_the_windows_of_the_last_retrain_as_new(cfg: Config, store: ModelStore) -> None:
    reservoir = _filled(cfg)
    assert Retrainer(cfg, reservoir, store, trainer=_alarms_on_everything).run_once().status == "rejected"
    path = reservoir.save(Path(cfg.paths.state_dir) / "reservoir.npz")
    restarted, _ = open_reservoir(cfg)  # the worker restarts: same reservoir, no new window
    again = Retrainer(cfg, restarted, store, trainer=_alarms_on_everything).run_once()
    assert again.status == "skipped" and "0 new windows since the last retrain" in again.reason, again.reason
    for i in range(100):
        restarted.add("sensor-00", 1_767_300_000_000 + i * 1000, restarted.snapshot().windows[i])
    restarted.save(path)
    assert Retrainer(cfg, open_reservoir(cfg)[0], store, trainer=_alarms_on_everything).run_once().status == \
        "rejected", "100 new windows: retrain.n_min_new_windows is met"


def test_a_restarted_trainer_counts_as_new_only_windows_after_the_serving_model_s(cfg: Config,
                                                                                 store: ModelStore) -> None:
    assert Retrainer(cfg, _filled(cfg), store).run_once().status == "published"
    # the fleet trainer keeps no file: restarted, it reads the same windows back into an empty reservoir
    again = Retrainer(cfg, _filled(cfg), store).run_once()
    assert again.status == "skipped" and "0 new windows since the last retrain" in again.reason, again.reason
    assert store.current() == "v0002"


def test_a_version_published_beside_the_trainer_counts_its_windows_as_used(cfg: Config, store: ModelStore) -> None:
    reservoir = _filled(cfg)
    trainer = Retrainer(cfg, reservoir, store)
    assert trainer.run_once().status == "published"  # v0002, and the trainer's mark
    windows, other = reservoir.snapshot().windows, _filled(cfg)  # `aestream retrain` reads the same windows
    for i in range(150):  # new windows, then `aestream retrain` beside the trainer trains on them all
        for r in (reservoir, other):
            r.add("sensor-00", 1_767_300_000_000 + i * 1000, windows[i])
    beside = Retrainer(cfg, other, store).run_once(force=True)
    assert beside.status == "published" and store.current() == "v0003", beside.reason
    again = trainer.run_once()
    assert again.status == "skipped" and "0 new windows since the last retrain" in again.reason, again.reason


class _Behind:
    """A models-topic reader that has not polled since another publisher's version: its ``held()`` reads the
    topic to its end, as KafkaModelStore's does."""

    def __init__(self, store: ModelStore) -> None:
        self.store, self.caught_up = store, False

    def current(self) -> str | None:
        return self.store.current() if self.caught_up else "v0001"

    def held(self) -> str | None:
        self.caught_up = True
        return self.store.held()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_retrain_gates_against_the_version_serving_now(cfg: Config, store: ModelStore) -> None:
    assert Retrainer(cfg, _filled(cfg), store).run_once().status == "published"  # v0002, by another publisher
    outcome = Retrainer(cfg, _filled(cfg), _Behind(store)).run_once(force=True)
    assert outcome.status == "published" and "for v0002" in outcome.reason, outcome.reason
    assert store.meta(outcome.version)["info"]["retrain"]["previous_version"] == "v0002"


class _Blips:
    """A models-topic store whose broker stops answering once the run is decided."""

    def __init__(self, fail_on: int) -> None:
        self.calls, self.fail_on = 0, fail_on

    def current(self) -> str | None:
        self.calls += 1
        if self.calls >= self.fail_on:
            raise TimeoutError("reading the models topic took over 30 s")
        return None

    def held(self) -> None:
        return None


def test_a_failure_after_the_run_is_reported_with_its_outcome_not_raised(cfg: Config) -> None:
    seen: list[Any] = []
    empty = Reservoir(10, 16, 4, half_life_s=1.0, max_age_s=1.0)
    retrainer = Retrainer(cfg, empty, _Blips(fail_on=2), on_outcome=seen.append)  # type: ignore[arg-type]
    outcome = retrainer.run_once()  # skipped (too few windows), then the store times out
    assert outcome.status == "skipped" and outcome.serving is None
    assert "TimeoutError: reading the models topic took over 30 s" in outcome.reason
    assert seen == [outcome] and retrainer.last_outcome == outcome

    class Stuck(TrainLock):
        def acquire(self) -> bool:
            raise OSError("state volume is read-only")

    stuck = Retrainer(cfg, empty, _Blips(fail_on=99), lock=Stuck(Path(cfg.paths.model_dir), stale_s=60),
                      on_outcome=seen.append)  # type: ignore[arg-type]
    failed = stuck.run_once()
    assert failed.status == "failed" and "OSError: state volume is read-only" in failed.reason
    assert seen[-1] == failed == stuck.last_outcome


def test_a_publisher_whose_key_reads_no_version_fails_and_publishes_nothing(cfg: Config, train_small: Any) -> None:
    fleet = ModelStore(cfg.paths.model_dir, key=b"the fleet's key")
    fleet.publish(train_small(cfg))
    fleet.publish(train_small(cfg, seed=1))
    mis_keyed = ModelStore(cfg.paths.model_dir, key=b"another key")
    outcome = Retrainer(cfg, _filled(cfg), mis_keyed).run_once()
    assert outcome.status == "failed" and outcome.reason.startswith(
        "no version in the store reads with this process's AESTREAM_MODEL_KEY (")
    assert "is it the fleet's key? Nothing is published" in outcome.reason
    assert fleet.versions() == ["v0001", "v0002"] and fleet.current() == "v0002"


def test_a_corrupt_serving_model_is_replaced_when_another_version_reads(cfg: Config, train_small: Any) -> None:
    s = ModelStore(cfg.paths.model_dir, key=b"the fleet's key")
    s.publish(train_small(cfg))
    s.publish(train_small(cfg, seed=1))
    (Path(cfg.paths.model_dir) / "v0002" / "weights.pt").write_bytes(b"altered")
    outcome = Retrainer(cfg, _filled(cfg), s).run_once()
    assert outcome.status == "published" and outcome.version == s.current() == "v0003", outcome.reason
