"""Scale-out under load: workers go 1 → 3 → 1 in one group while readings stream in. Partitions move, each
sensor's windows continue on the new owner (rebuilt from the bounded lookback), nothing is skipped, every
window keeps one id, and every worker serves the same model version."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from aestream.config import Config
from aestream.kafka.kafka_python import ensure_topics
from aestream.models.store import ModelStore

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.xdist_group("processes")]


def test_one_to_three_to_one_workers_under_load(worker_cfg: Config, kit: Any, tmp_path: Path) -> None:
    cfg = worker_cfg.replace(kafka={"fetch_process": True})  # the opt-in fetch process through 1 → 3 → 1
    k = cfg.kafka
    topic = k.input_topics[0]
    boot = k.bootstrap_servers[0]
    ensure_topics(k, {topic: 6, k.output_topic: 1, k.dead_letter_topic: 1})
    bundle, calibrated = kit.trained_bundle(cfg, n_sensors=12)
    ModelStore(cfg.paths.model_dir).publish(bundle)
    stream = kit.plant_stream(cfg, n_sensors=12, steps=900, n_anomalies=4, seed=3)
    bar = kit.detected_uninterrupted(cfg, bundle, stream, calibrated)
    assert bar, "the model should detect some injected anomalies"
    config_path = kit.write_config(cfg, tmp_path / "worker.toml")
    kit.wait_for_partitions(boot, topic, 6)
    producer = kit.Producer(boot, topic, stream.messages, rate=500.0)
    workers = [kit.WorkerProc(config_path, tmp_path / "worker-0.log")]
    try:
        producer.start()
        kit.wait_until(lambda: kit.committed_total(boot, k.group_id, topic) > 300, 120, what="first worker")
        workers += [kit.WorkerProc(config_path, tmp_path / f"worker-{i}.log") for i in (1, 2)]
        # wait until the newcomers own partitions and have rebuilt their sensors' windows
        kit.wait_until(lambda: all("rebuilding" in w.log_text() for w in workers[1:]), 120, what="scale out")
        time.sleep(3)
        for w in workers[1:]:
            assert w.alive, w.log_text()[-3000:]
            assert w.terminate() == 0, w.log_text()[-3000:]  # scale in: a clean leave hands partitions back
        kit.wait_until(lambda: not producer.is_alive() and kit.drained(boot, k.group_id, topic,
                                                                          len(stream.messages)),
                       180, every_s=0.5, what="drain on one worker")
        assert workers[0].alive and workers[0].terminate() == 0, workers[0].log_text()[-3000:]
    finally:
        for w in workers:
            if w.alive:
                w.kill9()
    assert producer.error is None, producer.error
    logs = [w.log_text() for w in workers]
    assert logs[0].count("rebuilding") >= 2, "the first worker should rebuild what it got back"
    assert all("serving model v0001" in log and "serving model v0002" not in log for log in logs)
    verdict = kit.audit(boot, cfg, stream, calibrated)
    assert verdict.skipped == 0
    assert not verdict.readings_uncovered, f"readings in no reported window: {verdict.gaps()}"
    assert not verdict.windows_bogus, verdict.windows_bogus[:5]
    assert verdict.windows_off_grid == 0 and verdict.off_phase == 0, "a restart moved windows off the grid"
    assert not verdict.conflicting_ids, verdict.conflicting_ids[:5]
    assert verdict.versions == {"v0001"}
    assert verdict.detected >= bar, f"detected {verdict.detected}, an uninterrupted run detects {bar}"
    print(f"rebalance 1→3→1: {verdict.messages} messages, {verdict.events} events ({verdict.duplicate_events} "
          f"duplicates, same ids), {verdict.anomalies_detected}/{verdict.anomalies_injected} anomalies")
