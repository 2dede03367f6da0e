"""100 000 distinct sensors through the worker in-process, built as ``aestream run`` builds it (``build_app``) with
retraining (the worker's own reservoir) and alerts on: idle sensors are evicted after the TTL, with their
reservoir samples and their alert state at rest, and memory stays bounded (a second wave of 100 000 new ids reuses
the first wave's memory). The few sensors in alarm keep their open episodes through the eviction."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from aestream.alerts import AlertStage
from aestream.app import build_app
from aestream.config import Config
from aestream.retrain.stage import ReservoirStage
from aestream.stream.messages import Outgoing, Record

pytestmark = pytest.mark.faults

N_SENSORS = 100_000
ALARMED = "?-00000?"  # 10 sensors of each wave: their threshold is a millionth of the others'
T0 = 1_767_225_600_000
CHANNELS = ("temperature", "pressure", "vibration", "current")


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class _Source:
    """Polls of 2000 records drawn from ``pending`` lazily (the input never sits in memory as a whole)."""

    def __init__(self) -> None:
        self.pending: Iterator[Record] = iter(())
        self.committed: dict[Any, int] = {}

    def poll(self, timeout_ms: int | None = None, max_records: int | None = None) -> list[Record]:
        return list(itertools.islice(self.pending, 2000))

    def commit(self, offsets: dict[Any, int], metadata: dict[Any, str] | None = None) -> bool:
        self.committed.update(offsets)
        return True

    def close(self) -> None: ...


class _Sink:
    def __init__(self) -> None:
        self.topics: Counter[str] = Counter()

    def send(self, msg: Outgoing) -> None:
        self.topics[msg.topic] += 1

    def flush(self, timeout_s: float = 60.0) -> None: ...
    def close(self, timeout_s: float = 10.0) -> None: ...


class _Models:
    def __init__(self, bundle: Any) -> None:
        bundle.version, bundle.threshold = "v0001", 1e9  # no alarm but ALARMED's: this test is about state
        self.bundle = bundle

    def current(self) -> str:
        return "v0001"

    def load(self, version: str | None = None, device: str = "cpu") -> Any:
        return self.bundle


def _wave(prefix: str, w: int, rng: np.random.Generator) -> Iterator[Record]:
    """One batched message of ``w`` readings per sensor: each sensor closes exactly one window."""
    ts = (T0 + 1000 * np.arange(w)).tolist()
    for i in range(N_SENSORS):
        sensor = f"{prefix}-{i:06d}"
        vals = np.round(rng.normal(50, 5, (w, len(CHANNELS))), 3).tolist()
        doc = [{"sensor": sensor, "ts": t, "values": v} for t, v in zip(ts, vals)]
        yield Record("in", i % 8, i, sensor.encode(), msgspec.json.encode(doc), 0)


def test_100k_sensors_are_evicted_after_the_ttl_and_memory_stays_bounded(train_small: Any, tmp_path: Path) -> None:
    cfg = Config().replace(
        baselines={"mode": "off"}, threshold={"sensors": {ALARMED: 1e-6}},
        stream={"channels": CHANNELS, "window_size": 16, "stride": 4, "sensor_ttl_s": 120.0},
        retrain={"enabled": True, "isolation": "thread", "interval_s": 86_400.0},  # never fires in the test
        # state in memory (aestream run keeps it in the alerts changelog, not in a file rewritten every second)
        alerts={"enabled": True, "persist_interval_s": 1e9},
        paths={"state_dir": str(tmp_path / "state"), "model_dir": str(tmp_path / "models")},
        ops={"metrics_enabled": False})
    now = [0.0]
    source, sink = _Source(), _Sink()
    app = build_app(cfg, source=source, sink=sink, models=_Models(train_small(cfg)), clock=lambda: now[0])
    worker = app.worker
    reservoir = next(s for s in worker.stages if isinstance(s, ReservoirStage))
    alerts = next(s for s in worker.stages if isinstance(s, AlertStage))
    assert app.retraining is not None and app.retraining.stage is reservoir
    app.retraining.start()
    worker.refresh_model(force=True)
    rng = np.random.default_rng(0)
    rss = {"start": rss_bytes()}
    try:
        for n_wave, wave in enumerate(("a", "b"), 1):
            source.pending = _wave(wave, cfg.stream.window_size, rng)
            while worker.step().records:
                pass
            assert len(worker.windows) == N_SENSORS, "every sensor of the wave is held"
            assert reservoir.n_pending == N_SENSORS - 10, "each normal sensor's window waits out the guard"
            assert f"{wave}-050000" in alerts.tracker and len(alerts.tracker.open_episodes()) == 10 * n_wave
            rss[wave] = rss_bytes()
            now[0] += cfg.stream.sensor_ttl_s + 61  # the wave goes silent past the TTL
            worker.step()  # an empty poll: eviction runs between steps
            assert len(worker.windows) == 0 and not worker._sensor_partition, "idle sensors are forgotten"
            assert worker.rule is not None and not worker.rule._state
            assert reservoir.n_pending == 0 and f"{wave}-050000" not in alerts.tracker, "and their stage state"
            assert len(alerts.tracker.open_episodes()) == 10 * n_wave, "open episodes stay, to be resolved"
            rss[f"{wave}-evicted"] = rss_bytes()
    finally:
        app.retraining.close()
    assert worker.totals.windows == 2 * N_SENSORS and worker.totals.late == 0
    assert worker.totals.events == 20 and sink.topics[cfg.alerts.topic] == 20, "ALARMED: an anomaly, an opened"
    mib = {k: round(v / 2**20) for k, v in rss.items()}
    per_sensor = (rss["a"] - rss["start"]) / N_SENSORS
    print(f"many sensors: {N_SENSORS} per wave, RSS MiB {mib}, ~{per_sensor:.0f} B per live sensor")
    # wave b reuses what wave a (then evicted) had: no growth beyond noise
    assert rss["b"] - rss["a"] < 32 << 20, f"RSS kept growing across evicted waves: {mib}"
