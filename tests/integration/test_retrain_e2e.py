"""Scheduled retraining on the real broker: drift absorbed, anomalies still caught, failures harmless, rollback
followed within a batch, restart keeps reservoir and version."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from faultkit import wait_until  # tests/faults, on the path by conftest
from kafka import KafkaConsumer, TopicPartition

from aestream.commands.cli import main as cli_main
from aestream.commands.simulate import Plant
from aestream.config import Config
from aestream.models.bundle import ModelBundle
from aestream.models.store import ModelStore
from aestream.retrain.retrainer import Retrainer
from aestream.retrain.scheduler import build_retraining
from aestream.stream.codec import encode_reading
from aestream.training.build import train_bundle_from_windows
from aestream.training.fit import sliding_windows

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START_MS = 1_767_225_600_000
SHIFT_STEP = 1100  # the regime shifts at this plant step (phase 1 covers steps 800-1699)


def _retrain_cfg(topics: Config, **retrain: Any) -> Config:
    return topics.replace(
        kafka={"max_poll_records": 200},
        threshold={"quantile": 0.999, "factor": 1.5, "k": 2, "n": 3},
        model={"family": "vanilla", "hidden_size": 32, "latent_size": 6, "device": "cpu", "torch_threads": 1},
        retrain={"enabled": True, "schedule": "interval", "interval_s": 2.0, "epochs": 60, "n_min_windows": 200,
                 "guard_s": 20.0, "regime_change_after_s": 60.0, "max_age_s": 300.0, "half_life_s": 120.0,
                 "gate_max_far": 0.05, "gate_tolerance": 0.1, "save_every_s": 1.0, "timeout_s": 120.0,
                 "sample_interval_s": 0.0, **retrain},
    )


def _messages(plant: Plant, values: np.ndarray, step0: int) -> list[tuple[bytes, bytes]]:
    out = []
    for step in range(values.shape[1]):
        ts = START_MS + (step0 + step) * plant.period_ms
        for i, s in enumerate(plant.sensors):
            out.append((s.encode(), encode_reading(s, ts, [round(float(v), 5) for v in values[i, step]])))
    return out


def _start(worker: Any) -> threading.Thread:
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    return t


def test_a_sustained_shift_is_absorbed_by_a_scheduled_retrain_and_a_later_anomaly_is_still_caught(
        topics: Config, kafka_tools: dict[str, Any], train_small: Any) -> None:
    cfg = _retrain_cfg(topics)
    store = ModelStore(cfg.paths.model_dir)
    store.publish(train_small(cfg))
    plant = Plant(4, cfg.stream.channels, seed=0)
    sigma = plant.signal(800).reshape(-1, 4).std(axis=0)  # the draw train_small fitted v0001 on
    phase1 = plant.signal(900, step0=800)
    phase1[:, SHIFT_STEP - 800:, :] += 3 * sigma  # +3σ on every channel, sustained
    retraining = build_retraining(cfg, store)
    assert retraining is not None
    seen: list[tuple[str, str]] = []
    worker = kafka_tools["make_worker"](cfg, stages=[retraining.stage], model_check_interval_s=0.2,
                                        on_event=lambda e: seen.append((e["model_version"], worker.bundle.version)))
    thread = _start(worker)
    msgs1 = _messages(plant, phase1, 800)
    kafka_tools["produce"](cfg, msgs1)
    wait_until(lambda: worker.totals.readings >= len(msgs1), 60, 0.05, "phase 1 to be consumed")
    before = [json.loads(m.value) for m in kafka_tools["read_all"](cfg, cfg.kafka.output_topic)]
    t0_ms = START_MS + SHIFT_STEP * 1000
    assert {e["sensor"] for e in before if e["window_end_ms"] >= t0_ms} == set(plant.sensors), "shift flagged"
    assert {e["model_version"] for e in before} == {"v0001"}

    retraining.start()  # the scheduled job (every 2 s) retrains from the reservoir
    wait_until(lambda: store.current() == "v0002", 120, 0.05, "a scheduled retrain to publish v0002")
    retraining.scheduler.shutdown()  # one scheduled retrain is what this test is about
    swap_s = wait_until(lambda: worker.bundle.version == "v0002", 5, 0.05, "the worker to swap in v0002")
    info = store.load().info["retrain"]
    assert info["newest_end_ms"] - info["oldest_end_ms"] <= 300_000 and info["oldest_end_ms"] >= t0_ms, \
        "max_age_s dropped the old regime; the sustained-shift rule let the new one in"

    phase2 = plant.signal(400, step0=1700) + 3 * sigma
    inj = plant.inject(phase2, 2, "shift", 1700 + 200, 40, START_MS, step0=1700)  # 40 s < regime_change_after_s
    n_before = len(before)
    kafka_tools["produce"](cfg, _messages(plant, phase2, 1700))
    wait_until(lambda: worker.totals.readings >= len(msgs1) + 4 * 400, 60, 0.05, "phase 2 to be consumed")
    worker.stop()
    thread.join(30)

    after = [json.loads(m.value) for m in kafka_tools["read_all"](cfg, cfg.kafka.output_topic)][n_before:]
    span_ms = cfg.stream.window_size * 1000
    hits = [e for e in after if e["sensor"] == inj.sensor and inj.start_ms <= e["window_end_ms"]
            <= inj.end_ms + span_ms]
    false = [e for e in after if e not in hits]
    n_windows = 4 * 400 // cfg.stream.stride
    assert hits, "the anomaly injected after the swap was not detected"
    assert len(false) / n_windows < cfg.retrain.gate_max_far, f"{len(false)} false alarms on the new regime"
    assert {e["model_version"] for e in after} == {"v0002"}
    assert all(event_v == serving_v for event_v, serving_v in seen), "an event names another version"
    print(f"swap after {swap_s:.2f} s; {len(hits)} hits, {len(false)} false alarms / {n_windows} windows")

    retraining.close()  # what `aestream run` does after the loop: stop the scheduler, save the reservoir

    # restart: the reservoir and the current version survive
    kept = len(retraining.stage.reservoir)
    again = build_retraining(cfg, store)
    assert again is not None and len(again.stage.reservoir) == kept > 0
    restarted = kafka_tools["make_worker"](cfg, stages=[again.stage])
    kafka_tools["run_until_idle"](restarted, idle_s=1.0)
    assert restarted.bundle.version == "v0002"


def _committed_equals_end(cfg: Config) -> bool:
    c = KafkaConsumer(bootstrap_servers=list(cfg.kafka.bootstrap_servers), group_id=cfg.kafka.group_id,
                      enable_auto_commit=False)
    topic = cfg.kafka.input_topics[0]
    tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or [])]
    ends = c.end_offsets(tps)
    ok = all(c.committed(tp) == ends[tp] for tp in tps)
    c.close()
    return ok


def _raises_late(*args: Any, **kwargs: Any) -> ModelBundle:
    time.sleep(2.0)
    raise RuntimeError("out of memory, say")


def _alarms_on_everything(*args: Any, **kwargs: Any) -> ModelBundle:
    bundle = train_bundle_from_windows(*args, **kwargs)
    bundle.threshold = 1e-9
    return bundle


def test_failed_and_rejected_retrains_while_scoring_leave_the_version_and_no_offset_gap(
        topics: Config, kafka_tools: dict[str, Any], train_small: Any) -> None:
    cfg = _retrain_cfg(topics, n_min_windows=10, isolation="process", interval_s=3600.0)
    store = ModelStore(cfg.paths.model_dir)
    bundle = train_small(cfg)
    bundle.threshold = 1e-9  # every window alarms: the events are the scored windows
    store.publish(bundle)
    retraining = build_retraining(cfg, store)
    assert retraining is not None
    plant = Plant(4, cfg.stream.channels, seed=0)
    for i, series in enumerate(plant.signal(200)):
        for j, w in enumerate(sliding_windows(series, 16, 4)):
            retraining.stage.reservoir.add(plant.sensors[i], START_MS + j * 4000, w)
    worker = kafka_tools["make_worker"](cfg, stages=[retraining.stage])
    thread = _start(worker)
    values = plant.signal(300, step0=200)
    msgs = _messages(plant, values, 200)

    def produce_slowly() -> None:
        for k in range(0, len(msgs), 60):
            kafka_tools["produce"](cfg, msgs[k : k + 60])
            time.sleep(0.1)

    producer = threading.Thread(target=produce_slowly)
    producer.start()
    thread_cfg = cfg.replace(retrain={"isolation": "thread"})
    nan_cfg = cfg.replace(model={"learning_rate": 1e12})  # a real training, in the subprocess, whose loss is NaN
    reservoir = retraining.stage.reservoir
    wait_until(lambda: worker.totals.readings > 0, 30, 0.05, "scoring to start")
    read_before = worker.totals.readings
    outcomes = [Retrainer(thread_cfg, reservoir, store, trainer=_raises_late).run_once(force=True),
                Retrainer(nan_cfg, reservoir, store).run_once(force=True),
                Retrainer(thread_cfg, reservoir, store, trainer=_alarms_on_everything).run_once(force=True)]
    scored_meanwhile = worker.totals.readings - read_before
    producer.join()
    wait_until(lambda: worker.totals.readings >= len(msgs), 60, 0.05, "the stream to be consumed")
    worker.stop()
    thread.join(30)
    retraining.close()

    assert [o.status for o in outcomes] == ["failed", "failed", "rejected"], [o.reason for o in outcomes]
    assert "RuntimeError: out of memory" in outcomes[0].reason and "loss became nan" in outcomes[1].reason
    assert store.current() == "v0001" and worker.bundle.version == "v0001"
    assert scored_meanwhile > 0, "scoring went on while the retrains ran"
    events = [json.loads(m.value) for m in kafka_tools["read_all"](cfg, cfg.kafka.output_topic)]
    keys = [(e["sensor"], e["window_end_ms"]) for e in events]
    first = 15 + 4  # the alarm rule is 2-of-3: a sensor's first window alone does not alarm
    expected = {(s, START_MS + (200 + step) * 1000) for s in plant.sensors for step in range(first, 300, 4)}
    assert len(keys) == len(set(keys)) and set(keys) == expected, "a window was skipped or scored twice"
    assert _committed_equals_end(cfg), "committed offsets stop short of the end"


def test_models_rollback_is_followed_by_a_running_worker_within_a_batch(
        topics: Config, kafka_tools: dict[str, Any], train_small: Any, tmp_path: Path) -> None:
    cfg = topics
    store = ModelStore(cfg.paths.model_dir)
    store.publish(train_small(cfg))
    noisy = store.load()
    noisy.threshold = 1e-9
    store.publish(noisy)
    worker = kafka_tools["make_worker"](cfg, model_check_interval_s=0.0)
    thread = _start(worker)
    wait_until(lambda: worker.bundle is not None and worker.bundle.version == "v0002" and worker.source.assignment(),
               30, 0.05, "v0002 to serve and the partitions to be assigned")
    conf = tmp_path / "config.toml"
    conf.write_text(f'[paths]\nmodel_dir = "{cfg.paths.model_dir}"\n')
    t0 = time.monotonic()
    assert cli_main(["--config", str(conf), "models", "rollback"]) == 0
    wait_until(lambda: worker.bundle.version == "v0001", 5, 0.05, "the worker to follow the rollback")
    switch_s = time.monotonic() - t0
    batch_s = cfg.kafka.poll_timeout_ms / 1000
    assert switch_s < 2 * batch_s + 0.5, f"switched after {switch_s:.2f} s"
    plant = Plant(4, cfg.stream.channels, seed=0)
    kafka_tools["produce"](cfg, _messages(plant, plant.signal(60, step0=800), 800))
    wait_until(lambda: worker.totals.readings >= 240, 30, 0.05, "the batch to be consumed")
    worker.stop()
    thread.join(30)
    events = [json.loads(m.value) for m in kafka_tools["read_all"](cfg, cfg.kafka.output_topic)]
    assert {e["model_version"] for e in events} <= {"v0001"}
    assert len(events) < worker.totals.windows, "v0002 would have alarmed on every window"
