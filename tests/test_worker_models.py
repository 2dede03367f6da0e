"""A refused model bundle: the worker backs off instead of reloading it every second, keeps serving the last good
version, starts on the newest good version when the current one is bad (instead of exiting), and counts each
refusal in the metrics."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from stubs import Switch  # tests/stubs.py

from aestream.config import Config
from aestream.errors import BundleError
from aestream.models.bundle import ModelBundle
from aestream.models.store import ModelStore
from aestream.ops.instrument import WorkerMetrics
from aestream.ops.metrics import Metrics
from aestream.worker import Worker, WorkerObserver

CHANNELS = ("temperature", "pressure", "vibration", "current")


class CountingStore(ModelStore):
    """A real store that counts the loads of each version."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.loads: dict[str, int] = {}

    def load(self, version: str | None = None, device: str = "cpu") -> ModelBundle:
        v = version or self.current() or ""
        self.loads[v] = self.loads.get(v, 0) + 1
        return super().load(version, device)


class _Lags:
    def lag(self) -> dict[Any, int]:
        return {}

    def assignment(self) -> set[Any]:
        return set()


def _tamper(store: ModelStore, version: str) -> None:
    meta = store.root / version / "meta.json"
    doc = json.loads(meta.read_text())
    doc["threshold"] = 1e-9
    meta.write_text(json.dumps(doc))  # no longer matches its manifest: refused


@pytest.fixture()
def cfg() -> Config:
    return Config().replace(baselines={"mode": "off"}, stream={"channels": CHANNELS, "window_size": 16, "stride": 4})


@pytest.fixture()
def store(tmp_path: Path, cfg: Config, train_small: Any) -> CountingStore:
    s = CountingStore(tmp_path / "models")
    bundle = train_small(cfg)
    for _ in range(3):
        s.publish(copy.deepcopy(bundle))  # v0001, v0002, v0003
    return s


def _worker(cfg: Config, store: ModelStore, scripted_source: Any, recording_sink: Any, now: list[float],
            metrics: Metrics | None = None) -> Worker:
    observers = [WorkerMetrics(metrics, _Lags())] if metrics is not None else []  # type: ignore[arg-type]
    return Worker(cfg, scripted_source([]), recording_sink(), store, clock=lambda: now[0], observers=observers)


def test_a_worker_whose_current_version_is_bad_starts_on_the_newest_good_one(
        cfg: Config, store: CountingStore, scripted_source: Any, recording_sink: Any) -> None:
    _tamper(store, "v0003")
    _tamper(store, "v0002")
    metrics = Metrics()
    worker = _worker(cfg, store, scripted_source, recording_sink, [0.0], metrics)
    worker.refresh_model(force=True)  # used to raise BundleError: the process exited, and crash-looped
    assert worker.bundle is not None and worker.bundle.version == "v0001"
    assert metrics.value("aestream_model_refusals_total") == 2
    assert metrics.value("aestream_model_info", version="v0001", family="vanilla") == 1


def test_with_no_good_version_at_all_the_start_still_fails_naming_the_current_one(
        cfg: Config, store: CountingStore, scripted_source: Any, recording_sink: Any) -> None:
    for v in ("v0001", "v0002", "v0003"):
        _tamper(store, v)
    worker = _worker(cfg, store, scripted_source, recording_sink, [0.0])
    with pytest.raises(BundleError, match=r"v0003.*meta.json does not match its checksum"):
        worker.refresh_model(force=True)


def test_a_refused_version_is_retried_with_backoff_while_the_last_good_one_serves(
        cfg: Config, store: CountingStore, scripted_source: Any, recording_sink: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    store.set_current("v0001")
    now = [0.0]
    metrics = Metrics()
    worker = _worker(cfg, store, scripted_source, recording_sink, now, metrics)
    worker.refresh_model(force=True)
    _tamper(store, "v0002")
    store.set_current("v0002")
    with caplog.at_level(logging.ERROR, logger="aestream.worker"):
        for t in range(1, 601):  # ten minutes of steps, the store checked every second
            now[0] = float(t)
            worker.refresh_model()
    assert worker.bundle is not None and worker.bundle.version == "v0001"
    refusals = [r for r in caplog.records if "v0002 refused" in r.getMessage()]
    assert 1 <= store.loads["v0002"] <= 10, store.loads  # 1, 2, 4 ... 256 s, then every 300 s: 10 in 10 minutes
    assert len(refusals) == store.loads["v0002"] and "next try in" in refusals[0].getMessage()
    assert metrics.value("aestream_model_refusals_total") == store.loads["v0002"]

    store.set_current("v0003")  # a good version is published: taken at the next check, not after a backoff
    now[0] += 1.0
    worker.refresh_model()
    assert worker.bundle.version == "v0003"


class _Refusals(WorkerObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def on_model_refused(self, version: str, reason: str) -> None:
        self.seen.append((version, reason))


@pytest.mark.parametrize(("stream", "trained_for"), [
    ({"window_size": 8}, f"channels {list(CHANNELS)} and window_size 8"),
    ({"channels": CHANNELS[:3]}, f"channels {list(CHANNELS[:3])} and window_size 16"),
], ids=["window_size", "channels"])
def test_a_version_trained_for_another_stream_is_refused_and_the_last_good_one_serves(
        cfg: Config, train_small: Any, scripted_source: Any, recording_sink: Any, stream: dict[str, Any],
        trained_for: str) -> None:
    one, two = train_small(cfg), train_small(cfg.replace(stream=stream))
    one.version, two.version = "v0001", "v0002"
    models, refusals = Switch({"v0001": one, "v0002": two}, "v0001"), _Refusals()
    worker = Worker(cfg, scripted_source([]), recording_sink(), models, clock=lambda: 0.0, observers=[refusals])
    worker.refresh_model(force=True)
    models.now = "v0002"
    worker.refresh_model(force=True)
    assert worker.bundle is one
    assert refusals.seen == [("v0002", f"model v0002 was trained for {trained_for}, but stream.channels = "
                                       f"{list(CHANNELS)} and stream.window_size = 16: retrain it with this config "
                                       "(aestream train)")]


def _readings(first: int, n: int) -> list[Any]:
    from aestream.stream.codec import encode_reading
    from aestream.stream.messages import Record

    return [Record("in", 0, i, b"s", encode_reading("s", 1_767_225_600_000 + 1000 * i, [1.0, 2, 3, 4]), -1)
            for i in range(first, first + n)]


def test_the_alarm_rule_is_the_config_s_and_its_state_carries_across_a_swap(
        train_small: Any, scripted_source: Any, recording_sink: Any, caplog: pytest.LogCaptureFixture) -> None:
    cfg = Config().replace(baselines={"mode": "off"}, stream={"channels": CHANNELS, "window_size": 4, "stride": 1},
                           threshold={"k": 2, "n": 3, "smoothing": 1, "critical_ratio": 5.0})
    one = train_small(cfg.replace(threshold={"k": 1, "n": 20}))  # trained with another rule: the config's applies
    one.version, one.threshold = "v0001", 1e-9  # every window over
    two = copy.deepcopy(one)
    two.version, two.threshold = "v0002", 2e-9
    models = Switch({"v0001": one, "v0002": two}, "v0001")
    worker = Worker(cfg, scripted_source([_readings(0, 8), _readings(8, 3)]), recording_sink(), models,
                    clock=lambda: 0.0)
    caplog.set_level(logging.INFO, logger="aestream.worker")
    worker.refresh_model(force=True)
    assert "this worker applies its config's [threshold]" in caplog.text
    before = worker.step()  # windows end at readings 3..7: the 1st is 1 of 3 over, the others alarm (2 of 3)
    models.now = "v0002"
    worker.refresh_model(force=True)
    after = worker.step()
    assert [e["window_end_ms"] % 100_000 for e in before.events_out] == [4000, 5000, 6000, 7000]
    assert {e["severity"] for e in before.events_out} == {"critical"}  # ratio 1e9 ≥ critical_ratio 5
    assert after.model_version == "v0002"
    # the episode goes on through the swap (it used to close, and reopen a window later)
    assert len(after.events_out) == 3
    assert worker.rule is not None and worker.rule._state["s"].flags.bit_count() == 3  # the last 3 windows: over


def test_with_no_model_published_the_worker_waits_without_reading_and_serves_the_first_one(
        train_small: Any, recording_sink: Any, caplog: pytest.LogCaptureFixture) -> None:
    cfg = Config().replace(baselines={"mode": "off"}, stream={"channels": CHANNELS, "window_size": 4, "stride": 1})

    class Source:
        def __init__(self) -> None:
            self.polls = 0

        def poll(self, timeout_ms: int | None = None, max_records: int | None = None) -> list[Any]:
            self.polls += 1
            return _readings(0, 8) if self.polls == 1 else []

        def commit(self, offsets: Any, metadata: Any = None) -> bool:
            return True

        def close(self) -> None: ...

    class Steps:
        def __init__(self) -> None:
            self.n = 0

        def on_step(self, stats: Any, seconds: float) -> None:
            self.n += 1  # what keeps /healthz fresh

        def on_model(self, bundle: Any) -> None: ...

    models = Switch({"v0001": train_small(cfg)}, "v0001")
    models.now = None  # type: ignore[assignment]  # nothing published yet
    source, seen = Source(), Steps()
    worker = Worker(cfg, source, recording_sink(), models, clock=lambda: 0.0, model_check_interval_s=0.0,
                    observers=[seen])
    caplog.set_level(logging.WARNING, logger="aestream.worker")
    worker.refresh_model(force=True)
    for _ in range(3):
        assert worker.step().records == 0  # it used to fail here: "refresh_model() first"
    assert source.polls == 0 and seen.n == 3 and caplog.text.count("no model is published yet") == 1
    models.now = "v0001"  # published
    assert worker.step().records == 8 and worker.bundle is not None


def test_a_store_pointer_that_cannot_be_read_leaves_the_served_model_serving(
        cfg: Config, store: CountingStore, scripted_source: Any, recording_sink: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    worker = _worker(cfg, store, scripted_source, recording_sink, now)
    worker.refresh_model(force=True)
    assert worker.bundle is not None and worker.bundle.version == "v0003"
    current = store.root / "CURRENT"
    current.unlink()
    current.mkdir()  # unreadable as a file, as one another user wrote owner-only
    now[0] = 100.0
    worker.refresh_model()  # used to raise out of the step: the worker stopped
    assert worker.bundle.version == "v0003"
    assert "the model store's current version cannot be read, still serving v0003" in caplog.text
    fresh = _worker(cfg, store, scripted_source, recording_sink, now)
    with pytest.raises(BundleError, match=r"CURRENT file in .* cannot be read"):
        fresh.refresh_model(force=True)  # none served yet: the start fails, naming the file
