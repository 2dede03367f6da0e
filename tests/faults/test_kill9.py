"""kill -9 a worker at random points under load, restart it: nothing is lost, duplicates keep their ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aestream.config import Config
from aestream.kafka.kafka_python import ensure_topics
from aestream.models.store import ModelStore

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.xdist_group("processes")]


def test_kill9_cycles_under_load_lose_nothing(worker_cfg: Config, kit: Any, tmp_path: Path) -> None:
    cfg = worker_cfg
    k = cfg.kafka
    ensure_topics(k, {k.input_topics[0]: 3, k.output_topic: 1, k.dead_letter_topic: 1})
    bundle, calibrated = kit.trained_bundle(cfg, n_sensors=6)
    ModelStore(cfg.paths.model_dir).publish(bundle)
    stream = kit.plant_stream(cfg, n_sensors=6, steps=1800, n_anomalies=4, seed=1)
    bar = kit.detected_uninterrupted(cfg, bundle, stream, calibrated)
    assert bar, "the model should detect some injected anomalies"
    config_path = kit.write_config(cfg, tmp_path / "worker.toml")

    report = kit.kill9_cycles(k.bootstrap_servers[0], cfg, config_path, tmp_path, stream, cycles=3,
                              rate=400.0, seed=1)
    verdict = kit.audit(k.bootstrap_servers[0], cfg, stream, calibrated)

    assert report.exit_code == 0, report.logs[-1][-3000:]
    assert verdict.skipped == 0, "committed offsets are behind the end offsets"
    assert not verdict.readings_uncovered, f"readings in no reported window: {verdict.gaps()}"
    assert not verdict.windows_bogus, verdict.windows_bogus[:5]
    assert verdict.windows_off_grid == 0 and verdict.off_phase == 0, "a restart moved windows off the grid"
    assert not verdict.conflicting_ids, f"a window reported under two ids: {verdict.conflicting_ids[:5]}"
    assert verdict.detected >= bar, f"detected {verdict.detected}, an uninterrupted run detects {bar}"
    assert verdict.versions == {"v0001"}
    assert sum("rebuilding" in log for log in report.logs[1:]) >= 3, "restarted workers should replay a lookback"
    print(f"kill9: {report.cycles} cycles, {verdict.messages} messages, {verdict.events} events "
          f"({verdict.duplicate_events} duplicates, same ids), "
          f"{verdict.anomalies_detected}/{verdict.anomalies_injected} anomalies, "
          f"peak worker RSS {report.peak_rss_bytes >> 20} MiB")
