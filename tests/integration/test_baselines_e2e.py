"""Per-sensor baselines on the real broker: written to the group's compacted changelog before the offsets they
reflect are committed, and restored by the partition's next owner before its first record."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from aestream.app import changelog_topic
from aestream.commands.simulate import Plant
from aestream.config import Config
from aestream.detect.baselines import Baseline
from aestream.models.store import ModelStore
from aestream.stream.codec import encode_reading

pytestmark = pytest.mark.integration

START_MS = 1_767_225_600_000
OFFSETS = {"sensor-00": 0.0, "sensor-01": 20.0, "sensor-02": -15.0}  # operating points far apart


def _messages(plant: Plant, steps: int, step0: int = 0, anomalies: Any = ()) -> list[tuple[bytes, bytes]]:
    readings = plant.readings(steps, START_MS + step0 * plant.period_ms, list(anomalies), step0=step0)
    return [(s.encode(), encode_reading(s, ts, [v + OFFSETS[s] * (1 + j) for j, v in enumerate(vals)]))
            for s, ts, vals in readings]


@pytest.mark.parametrize("mode", ["shared", "finetune"])
def test_a_restarted_worker_restores_its_baselines_and_judges_at_once(
        topics: Config, kafka_tools: dict[str, Any], train_small: Any, mode: str) -> None:
    cfg = topics.replace(stream={"stride": 1},
                         baselines={"mode": mode, "n_readings": 150, "finetune_blocking": True, "finetune_epochs": 5},
                         threshold={"quantile": 0.99, "factor": 1.5, "k": 1, "n": 1})
    ModelStore(cfg.paths.model_dir).publish(train_small(cfg))
    plant = Plant(3, cfg.stream.channels, seed=0)
    plant.signal(800)  # the draws train_small made: the plant as it was trained, at three operating points
    kafka_tools["produce"](cfg, _messages(plant, 200))
    first = kafka_tools["make_worker"](cfg)
    kafka_tools["run_until_idle"](first)
    assert first.totals.calibrating == 0 and first.totals.events == 0
    made = {s: b.to_json() for s, b in first.baselines.ready.items()}  # type: ignore[union-attr]
    assert sorted(made) == sorted(OFFSETS)

    log = {m.key.decode(): m for m in kafka_tools["read_all"](cfg, changelog_topic(cfg))}
    assert {k: m.value for k, m in log.items()} == made  # every baseline, as made, before the commit
    assert {m.headers["aestream.source.topic"] for m in log.values()} == {cfg.kafka.input_topics[0].encode()}
    own = [json.loads(m.value).get("model") is not None for m in log.values()]
    assert all(own) if mode == "finetune" else not any(own)
    admin = KafkaAdminClient(bootstrap_servers=list(cfg.kafka.bootstrap_servers))
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, changelog_topic(cfg))])
        topic = described["topic"][changelog_topic(cfg)]
        assert topic["cleanup.policy"]["value"] == "compact"
    finally:
        admin.close()

    # a new owner: 100 more readings with a shift on sensor-01 — fewer than a calibration needs, so any event
    # there comes from a restored baseline
    kafka_tools["produce"](cfg, _messages(plant, 100, step0=200, anomalies=[(1, "shift", 240, 40)]))
    second = kafka_tools["make_worker"](cfg)
    kafka_tools["run_until_idle"](second)
    restored = second.baselines.ready  # type: ignore[union-attr]
    assert {s: b.to_json() for s, b in restored.items()} == made
    assert second.totals.calibrating == 0
    events = [json.loads(m.value) for m in kafka_tools["read_all"](cfg, cfg.kafka.output_topic)]
    assert {e["sensor"] for e in events} == {"sensor-01"}
    assert {e["threshold"] for e in events} == {round(Baseline.from_json(made["sensor-01"]).threshold, 6)}
