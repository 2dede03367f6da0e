"""Shared fixtures: one real Kafka broker per test session, fresh topic/group names per test, a small model."""

from __future__ import annotations

import gc
import logging
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from aestream.commands.simulate import Plant
from aestream.config import Config
from aestream.models.bundle import ModelBundle
from aestream.ops.logs import LOG_JSON_ENV
from aestream.stream.messages import Partition, Record
from aestream.training.build import train_bundle

sys.path.insert(0, str(Path(__file__).parent / "faults"))
sys.path.insert(0, str(Path(__file__).parent / "evaluate"))  # skabdata: synthetic SKAB files
sys.path.insert(0, str(Path(__file__).parent))  # stubs: the in-memory stand-ins worker tests share
from faultkit import Broker  # one broker helper for all (the fault kit is also run by path by benchmarks/soak.py)

CHANNELS = ("temperature", "pressure", "vibration", "current")


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """The logging set-up as it was before each test. A test that runs the CLI in-process installs a handler on
    this test's captured stderr, which pytest closes after it: a Kafka client's thread that logs later (its broker
    stopped) then printed "--- Logging error --- I/O operation on closed file" tracebacks into the run's output."""
    root, kafka = logging.getLogger(), logging.getLogger("kafka")
    handlers, level, kafka_level = root.handlers[:], root.level, kafka.level
    form = os.environ.get(LOG_JSON_ENV)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    kafka.setLevel(kafka_level)
    if form is None:
        os.environ.pop(LOG_JSON_ENV, None)
    else:
        os.environ[LOG_JSON_ENV] = form


@pytest.fixture(autouse=True)
def _garbage_collected(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that talks to the broker, collect the garbage, so a Kafka client it left unclosed (its sockets
    warned of as unraisable) fails that test, not whichever later one the collector happened to run in."""
    yield
    if request.node.get_closest_marker("integration"):
        gc.collect()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Apache Kafka broker (KRaft) started by deploy/kafka/kafka.sh, or AESTREAM_TEST_BOOTSTRAP."""
    given = os.environ.get("AESTREAM_TEST_BOOTSTRAP")
    if given:
        yield given
        return
    broker = Broker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture()
def kafka_config(kafka_bootstrap: str, tmp_path: Path) -> Config:
    """Defaults pointed at the session broker, with topic and group names of this test alone."""
    run = uuid.uuid4().hex[:10]
    return Config().replace(
        kafka={"bootstrap_servers": (kafka_bootstrap,), "group_id": f"g-{run}", "input_topics": (f"in-{run}",),
               "output_topic": f"out-{run}", "dead_letter_topic": f"dlq-{run}", "session_timeout_ms": 6000,
               "heartbeat_interval_ms": 1000, "poll_timeout_ms": 100},
        stream={"channels": CHANNELS, "window_size": 16, "stride": 4},
        model={"detrend_channels": ()},
        baselines={"mode": "off"},  # the tests of the loop judge every sensor by the model; baselines have their own
        paths={"model_dir": str(tmp_path / "models"), "state_dir": str(tmp_path / "state")},
        # any free port: several workers (and trainers) may run at once
        ops={"metrics_port": 0, "trainer_metrics_port": 0, "metrics_host": "127.0.0.1"},
    )


def small_bundle(cfg: Config, family: str = "vanilla", seed: int = 0, epochs: int = 25) -> ModelBundle:
    """A real model trained on a simulated plant's normal readings (a few seconds on CPU)."""
    plant = Plant(4, cfg.stream.channels, seed=seed)
    normal = plant.signal(800)
    model = cfg.replace(model={"family": family, "epochs": epochs, "hidden_size": 32, "latent_size": 6,
                               "torch_threads": 1, "device": "cpu", "input_smoothing": 1,
                               "detrend_channels": tuple(c for c in cfg.model.detrend_channels
                                                         if c in cfg.stream.channels)}).model
    return train_bundle(list(normal), cfg.stream, model, cfg.threshold)


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture()
def train_small() -> object:
    """``train_small(cfg, family="vanilla")`` → a real trained :class:`ModelBundle`."""
    return small_bundle


class OneModel:
    """A model store that serves one bundle as v0001; ``threshold`` overrides its calibrated one (1e-9: every
    window alarms, so each window is an event)."""

    def __init__(self, bundle: ModelBundle, threshold: float | None = None) -> None:
        bundle.version = "v0001"
        if threshold is not None:
            bundle.threshold = threshold
        self.bundle = bundle

    def current(self) -> str:
        return self.bundle.version

    def load(self, version: str | None = None, device: str = "cpu") -> ModelBundle:
        return self.bundle


class RecordingSink:
    """A sink that keeps what the worker sends (``sent``); flush and close do nothing."""

    def __init__(self) -> None:
        self.sent: list[object] = []

    def send(self, msg: object) -> None:
        self.sent.append(msg)

    def flush(self, timeout_s: float = 60.0) -> None: ...
    def close(self, timeout_s: float = 10.0) -> None: ...


class ScriptedSource:
    """A source polling prepared batches that keeps every commit (``commits``: offsets and metadata) and hands
    out ``handoff`` as the metadata committed with the offset its replay replays up to, as the Kafka sources do."""

    def __init__(self, polls: list[list[Record]], handoff: dict[Partition, str] | None = None) -> None:
        self.polls, self.handoff = polls, dict(handoff or {})
        self.commits: list[tuple[dict[Partition, int], dict[Partition, str] | None]] = []

    def poll(self, timeout_ms: int | None = None, max_records: int | None = None) -> list[Record]:
        return self.polls.pop(0) if self.polls else []

    def committed_metadata(self) -> dict[Partition, str]:
        out, self.handoff = self.handoff, {}
        return out

    def commit(self, offsets: dict[Partition, int], metadata: dict[Partition, str] | None = None) -> bool:
        self.commits.append((dict(offsets), metadata))
        return True

    def close(self) -> None: ...

    @property
    def offsets(self) -> dict[Partition, int]:
        """The last committed offset of each partition."""
        return {p: o for offsets, _ in self.commits for p, o in offsets.items()}

    @property
    def metadata(self) -> dict[Partition, str]:
        """The metadata of each partition's last commit (``""``: none), as the broker keeps it."""
        return {p: (m or {}).get(p, "") for offsets, m in self.commits for p in offsets}


@pytest.fixture()
def scripted_source() -> type[ScriptedSource]:
    """``scripted_source(polls, handoff=None)`` → a :class:`ScriptedSource`."""
    return ScriptedSource


@pytest.fixture()
def one_model() -> type[OneModel]:
    """``one_model(bundle, threshold=None)`` → a store serving just that bundle, for an in-process Worker."""
    return OneModel


@pytest.fixture()
def recording_sink() -> type[RecordingSink]:
    """``recording_sink()`` → a sink whose ``sent`` lists what the worker produced."""
    return RecordingSink
