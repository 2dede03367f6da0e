"""The broker stops and starts again mid-stream: the worker rides it out (no crash, no crash loop) and resumes
with nothing lost."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from aestream.config import Config
from aestream.kafka.kafka_python import ensure_topics
from aestream.models.store import ModelStore

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.xdist_group("processes")]

OUTAGE_S = 10.0


def _stalled(kit: Any, bootstrap: str, group: str, topic: str, producer: Any, worker: Any) -> str:
    """Which side stalled: the producer, the commits or the worker (its log without the reconnect noise)."""
    try:
        offsets = str(kit.offsets(bootstrap, group, topic))
    except Exception as e:  # the report must not hide the timeout
        offsets = f"unreadable ({e!r})"
    return (f"producer: sent {producer.sent}/{len(producer.messages)}, alive {producer.is_alive()}, "
            f"error {producer.error!r}\n(committed, end) per partition: {offsets}\n"
            f"worker alive {worker.alive}; its log:\n{kit.log_without_reconnects(worker.log_text())[-6000:]}")


def test_worker_survives_a_broker_restart_and_loses_nothing(private_broker: Any, kit: Any, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:10]
    cfg = Config().replace(
        kafka={"bootstrap_servers": (private_broker.bootstrap,), "group_id": f"g-{run}",
               "input_topics": (f"in-{run}",), "output_topic": f"out-{run}", "dead_letter_topic": f"dlq-{run}",
               "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "poll_timeout_ms": 100,
               "max_poll_records": 200, "rebuild_lookback_messages": 400},
        stream={"channels": kit.CHANNELS, "window_size": 16, "stride": 1, "stride_ms": 4000},
        model={"detrend_channels": ()}, baselines={"mode": "off"},  # every window is judged: the bar is exact
        paths={"model_dir": str(tmp_path / "models"), "state_dir": str(tmp_path / "state")})
    k = cfg.kafka
    topic = k.input_topics[0]
    ensure_topics(k, {topic: 2, k.output_topic: 1, k.dead_letter_topic: 1})
    bundle, calibrated = kit.trained_bundle(cfg, n_sensors=6)
    ModelStore(cfg.paths.model_dir).publish(bundle)
    stream = kit.plant_stream(cfg, n_sensors=6, steps=1200, n_anomalies=3, seed=2)
    bar = kit.detected_uninterrupted(cfg, bundle, stream, calibrated)
    assert bar, "the model should detect some injected anomalies"
    kit.wait_for_partitions(private_broker.bootstrap, topic, 2)
    producer = kit.Producer(private_broker.bootstrap, topic, stream.messages, rate=600.0)
    worker = kit.WorkerProc(kit.write_config(cfg, tmp_path / "worker.toml"), tmp_path / "worker.log")
    try:
        producer.start()
        kit.wait_until(lambda: kit.committed_total(private_broker.bootstrap, k.group_id, topic) > 500, 120,
                       what="worker progress before the outage")
        producer.paused.set()  # the producer would buffer through the outage too; keep its sends out of the way
        private_broker.stop()
        time.sleep(OUTAGE_S)
        assert worker.alive, f"the worker died while the broker was down:\n{worker.log_text()[-4000:]}"
        private_broker.restart()
        producer.paused.clear()
        kit.wait_until(lambda: producer.error is not None or (not producer.is_alive()
                       and kit.drained(private_broker.bootstrap, k.group_id, topic, len(stream.messages))),
                       180, every_s=0.5, what="drain after the broker came back",
                       explain=lambda: _stalled(kit, private_broker.bootstrap, k.group_id, topic, producer, worker))
        assert producer.error is None, producer.error
        assert worker.alive, worker.log_text()[-4000:]
        assert worker.terminate() == 0, worker.log_text()[-4000:]
    finally:
        if worker.alive:
            worker.kill9()
    assert producer.error is None, producer.error
    verdict = kit.audit(private_broker.bootstrap, cfg, stream, calibrated)
    assert verdict.skipped == 0
    assert not verdict.readings_uncovered, f"readings in no reported window: {verdict.gaps()}"
    assert not verdict.windows_bogus, verdict.windows_bogus[:5]
    assert verdict.windows_off_grid == 0 and verdict.off_phase == 0, "a rejoin moved windows off the grid"
    assert not verdict.conflicting_ids, verdict.conflicting_ids[:5]
    assert verdict.detected >= bar, f"detected {verdict.detected}, an uninterrupted run detects {bar}"
    log = worker.log_text()
    assert log.count("serving model") == 1, "the worker restarted (crash loop?)"
    print(f"broker restart: {verdict.messages} messages, {verdict.events} events "
          f"({verdict.duplicate_events} duplicates, same ids), outage {OUTAGE_S} s")
