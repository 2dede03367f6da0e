"""The fleet as separate OS processes on the real broker, alerts and retraining on: workers (``aestream run``) that
share no volume, one trainer (``aestream trainer``), models served from the models topic.

* Episodes and baselines follow their partition: a worker killed with SIGKILL in the middle of an episode, then
  1 → 3 → 1 workers under load: every episode has exactly one ``opened`` (events sent after the last commit come
  again with the same ids: at least once), none is lost, no sensor calibrates twice.
* One trainer for the fleet: its publish reaches all three workers within 5 s; killed with SIGKILL while it
  trains, the workers keep serving and its next run publishes; a rollback made while it trains is not overwritten.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from faultkit import wait_until

from aestream.app import models_topic
from aestream.config import Config
from aestream.kafka.kafka_python import ensure_topics
from aestream.kafka.models_topic import KafkaModelStore

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.xdist_group("processes")]

ROOT = Path(__file__).resolve().parents[2]
KEY = "fleet test key"
ENV = {"AESTREAM_MODEL_KEY": KEY}
OUTCOME = re.compile(r"retrain (published|rejected|skipped|failed): ")


class Proc:
    """``aestream <command>`` as a subprocess in its own process group (a SIGKILL takes its children too, as a
    container's end would), logging to a file."""

    def __init__(self, config: Path, log: Path, *command: str) -> None:
        self.log = log
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **ENV}
        self._out = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "aestream", "--config", str(config), *command],
                                     cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill9(self) -> None:
        if self.alive:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._out.close()

    def terminate(self, timeout_s: float = 60.0) -> int:
        if self.alive:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self._out.close()


def _fleet_cfg(cfg: Config, run: str) -> Config:
    """The worker config of the fault suite as a fleet: models from the topic, one trainer, alerts on."""
    return cfg.replace(
        fleet={"models": "kafka", "retrain_in": "trainer"},
        alerts={"enabled": True, "topic": f"alerts-{run}", "cooldown_ms": 60_000, "n_resolve_windows": 3},
        baselines={"mode": "shared", "n_readings": 60},
        model={"family": "vanilla", "hidden_size": 32, "latent_size": 6, "input_smoothing": 1, "epochs": 20,
               "torch_threads": 1, "device": "cpu"},
        retrain={"enabled": True, "interval_s": 8.0, "sample_interval_s": 4.0, "guard_s": 20.0,
                 "n_min_windows": 150, "n_min_new_windows": 10, "gate_tolerance": 20.0, "gate_max_far": 0.05,
                 "gate_recall_tolerance": 0.25, "timeout_s": 300.0})


def _start(kit: Any, cfg: Config, tmp_path: Path, n_sensors: int, steps: int, n_anomalies: int,
           rate: float) -> tuple[Any, Any, float, Path]:
    """Topics, v0001 in the models topic (its calibrated threshold), the config file, the stream and its producer."""
    k = cfg.kafka
    ensure_topics(k, {k.input_topics[0]: 3, k.output_topic: 1, k.dead_letter_topic: 1, cfg.alerts.topic: 1})
    bundle, calibrated = kit.trained_bundle(cfg, n_sensors=n_sensors)
    bundle.threshold = calibrated
    store = KafkaModelStore(k, models_topic(cfg), KEY.encode())
    store.publish(bundle)
    store.close()
    stream = kit.plant_stream(cfg, n_sensors, steps, n_anomalies, seed=3)
    producer = kit.Producer(k.bootstrap_servers[0], k.input_topics[0], stream.messages, rate)
    return stream, producer, calibrated, kit.write_config(cfg, tmp_path / "fleet.toml")


def _wait(pred: Any, timeout_s: float, what: str, procs: tuple[Proc, ...] = ()) -> None:
    """:func:`faultkit.wait_until`, failing at once when one of ``procs`` dies; each one's log ends the error."""
    def ok() -> bool:
        for p in procs:
            assert p.alive, f"{p.log.name} died:\n{p.text()[-3000:]}"
        return bool(pred())

    wait_until(ok, timeout_s, 0.1, what,
               explain=lambda: "".join(f"\n--- {p.log.name}:\n{p.text()[-3000:]}" for p in procs))


def test_episodes_and_baselines_follow_their_partitions_through_kill9_and_1_3_1(
        worker_cfg: Config, kit: Any, tmp_path: Path) -> None:
    run = worker_cfg.kafka.group_id
    cfg = _fleet_cfg(worker_cfg, run)
    k = cfg.kafka
    bootstrap = k.bootstrap_servers[0]
    stream, producer, _, conf = _start(kit, cfg, tmp_path, n_sensors=6, steps=1800, n_anomalies=6, rate=150.0)
    workers = [Proc(conf, tmp_path / "w0.log", "run")]
    producer.start()
    try:
        # (a) SIGKILL the only worker while an episode is open
        open_at_kill: set[str] = set()

        def an_open_episode() -> bool:
            events = [json.loads(m.value) for m in kit.read_topic(bootstrap, cfg.alerts.topic, idle_s=0.3)]
            opened = {e["episode_id"] for e in events if e["type"] == "opened"}
            open_at_kill.update(opened - {e["episode_id"] for e in events if e["type"] == "resolved"})
            return bool(open_at_kill)

        _wait(an_open_episode, 180, "an episode to open", tuple(workers))
        workers.pop().kill9()
        workers.append(Proc(conf, tmp_path / "w1.log", "run"))
        # (b) 1 → 3 → 1 under load
        _wait(lambda: kit.committed_total(bootstrap, k.group_id, k.input_topics[0]) > 0, 120, "progress",
              tuple(workers))
        time.sleep(5)
        workers += [Proc(conf, tmp_path / f"w{i}.log", "run") for i in (2, 3)]
        _wait(lambda: all("restored" in w.text() or "assigned" in w.text() for w in workers[1:]), 120,
              "the new workers to get partitions", tuple(workers))
        time.sleep(10)
        for w in workers[:2]:
            assert w.terminate() == 0, w.text()[-3000:]
        survivor = workers[2]
        _wait(lambda: not producer.is_alive() and kit.drained(bootstrap, k.group_id, k.input_topics[0],
                                                              len(stream.messages)),
              600, "the last worker to drain the topic", (survivor,))
        assert survivor.terminate() == 0, survivor.text()[-3000:]
    finally:
        for w in workers:
            if w.alive:
                w.kill9()
    logs = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("w*.log"))
    assert logs.count("restored the baselines of") >= 2, "new owners restored baselines from the changelog"

    events = [json.loads(m.value) for m in kit.read_topic(bootstrap, cfg.alerts.topic)]
    # at least once: what the killed worker sent after its last commit comes again from the next owner, with the
    # same event ids (consumers drop them); an episode's events are counted once per id
    episodes: dict[str, Counter[str]] = defaultdict(Counter)
    ids: set[str] = set()
    for e in events:
        if e["category"] == "anomaly" and e["event_id"] not in ids:
            ids.add(e["event_id"])
            episodes[e["episode_id"]][e["type"]] += 1
    repeated = sum(e["category"] == "anomaly" for e in events) - len(ids)
    assert episodes, "the injected anomalies opened episodes"
    twice = {ep: c for ep, c in episodes.items() if c["opened"] > 1}
    assert not twice, f"episodes opened more than once: {twice}" + "".join(
        f"\n{e}" for e in events if e.get("episode_id") in twice)
    for ep in open_at_kill:  # the next owner went on with the episode the killed worker had open
        assert episodes[ep]["opened"] == 1 and episodes[ep]["resolved"] == 1, (ep, episodes[ep])
    lost = {ep: c for ep, c in episodes.items() if c["opened"] == 0}
    assert not lost, f"episodes updated or resolved without their opened: {lost}"
    # A calibration the killed worker finished after its last commit is done again by the next owner from the same
    # readings (at least once): the same event id, which consumers drop. A new owner that had not found the baseline
    # would calibrate on later readings: another window end, another id.
    finished = [e for e in events if e["type"] == "calibration_finished"]
    calibrated = Counter(sensor for sensor, _ in {(e["sensor"], e["event_id"]) for e in finished})
    assert set(calibrated.values()) == {1}, f"a sensor calibrated again on a new owner: {calibrated}"
    for e in finished:  # and a calibration done again gave the same baseline
        assert {x["threshold"] for x in finished if x["event_id"] == e["event_id"]} == {e["threshold"]}, e
    opened = [e for e in events if e["type"] == "opened"]
    for inj in stream.injected:  # each injected anomaly is inside one opened episode of its sensor
        hits = {e["episode_id"] for e in opened if e["sensor"] == inj.sensor
                and inj.start_ms <= e["window_end_ms"] <= inj.end_ms + stream.window_ms}
        assert len(hits) <= 1, f"one anomaly opened two episodes: {inj}, {hits}"
    print(f"fleet alerts: {len(episodes)} episodes, {sum(c['opened'] for c in episodes.values())} opened, "
          f"{repeated} episode event(s) repeated with their id, {len(stream.injected)} injected")


def test_fleet_retrain_publishes_to_every_worker(worker_cfg: Config, kit: Any, tmp_path: Path) -> None:
    run = worker_cfg.kafka.group_id
    cfg = _fleet_cfg(worker_cfg, run)
    k = cfg.kafka
    bootstrap = k.bootstrap_servers[0]
    _, producer, _, conf = _start(kit, cfg, tmp_path, n_sensors=6, steps=9000, n_anomalies=4, rate=200.0)
    workers = [Proc(conf, tmp_path / f"w{i}.log", "run") for i in range(3)]
    trainer = Proc(conf, tmp_path / "trainer-0.log", "trainer")
    reader = KafkaModelStore(k, models_topic(cfg), KEY.encode())
    producer.start()
    try:
        # (c) the trainer's publish reaches all three workers within 5 s
        _wait(lambda: reader.current() == "v0002", 240, "the trainer's first publish", (*workers, trainer))
        published = time.monotonic()
        _wait(lambda: all("serving model v0002" in w.text() for w in workers), 30, "every worker on v0002",
              tuple(workers))
        followed_s = time.monotonic() - published
        assert followed_s <= 5.0, f"the last worker served v0002 {followed_s:.1f} s after the publish"
        assert "published" in trainer.text() and "gate" in trainer.text()

        # (e) a rollback made while the trainer trains is not overwritten
        n_runs = trainer.text().count("training a candidate")
        _wait(lambda: trainer.text().count("training a candidate") > n_runs, 120, "the next training",
              (trainer,))
        n_outcomes = len(OUTCOME.findall(trainer.text()))  # the scheduler runs one retrain at a time
        operator = KafkaModelStore(k, models_topic(cfg), KEY.encode())
        assert operator.rollback("v0001") == "v0001"
        # the training under way ends by finding the rollback; or it ended before the hold was written (a slow
        # host): then it may have published, before the hold, which wins over any version published
        _wait(lambda: len(OUTCOME.findall(trainer.text())) > n_outcomes, 300, "the training to end", (trainer,))
        outcome = OUTCOME.findall(trainer.text())[n_outcomes]
        assert outcome != "failed", trainer.text()[-3000:]
        assert reader.held() == "v0001"  # held() reads to the topic's end: versions() then holds every publish
        before = reader.versions()
        _wait(lambda: all(w.text().count("serving model v0001") >= 2 for w in workers), 30,
              "every worker back on v0001", tuple(workers))
        n_skips = trainer.text().count("a rollback holds v0001")
        _wait(lambda: trainer.text().count("a rollback holds v0001") > n_skips, 60, "a scheduled run to skip",
              (trainer,))
        assert reader.held() == "v0001" and reader.current() == "v0001"
        assert reader.versions() == before, "nothing was published over the rollback"
        following = f"v{int(before[-1][1:]) + 1:04d}"
        # counted before the resume: a scheduled run may start training while `models resume` exits (a slow host),
        # and it is then the training killed below, not one that publishes before the kill
        n_runs = trainer.text().count("training a candidate")
        resumed = subprocess.run([sys.executable, "-m", "aestream", "--config", str(conf), "models", "resume"],
                                 cwd=ROOT, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=120)
        assert resumed.stdout.strip() == "v0001 serves; retraining publishes again", resumed.stderr

        # (d) SIGKILL the trainer while it trains: the workers keep serving, the next trainer publishes
        _wait(lambda: trainer.text().count("training a candidate") > n_runs, 120, "a training", (trainer,))
        trainer.kill9()
        before = kit.committed_total(bootstrap, k.group_id, k.input_topics[0])
        _wait(lambda: kit.committed_total(bootstrap, k.group_id, k.input_topics[0]) > before + 200, 60,
              "the workers to go on without the trainer", tuple(workers))
        # held() reads to the topic's end (current() alone reads what was fetched): the killed one published nothing
        assert reader.held() is None and reader.current() == "v0001", trainer.text()[-2000:]
        trainer = Proc(conf, tmp_path / "trainer-1.log", "trainer")
        _wait(lambda: reader.current() == following, 300, "the restarted trainer's publish", (*workers, trainer))
        assert re.search(r"trainer: \d+ windows read back", trainer.text()), trainer.text()[-2000:]
        _wait(lambda: all(f"serving model {following}" in w.text() for w in workers), 30,
              f"every worker on {following}", tuple(workers))
        assert trainer.terminate() == 0, trainer.text()[-3000:]
        for w in workers:
            assert w.terminate() == 0, w.text()[-3000:]
        print(f"fleet retrain: every worker served v0002 {followed_s:.1f} s after the publish; the training "
              f"under way at the rollback ended {outcome}")
    finally:
        producer.paused.set()
        for p in (*workers, trainer):
            if p.alive:
                p.kill9()
        reader.close()
