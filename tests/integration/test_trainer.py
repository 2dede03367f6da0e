"""The fleet's trainer on the real broker: it reads back the normal-windows topic, retrains, publishes to the models
topic, and serves its retrain counters and health like a worker."""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from typing import Any

import numpy as np
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewPartitions

from aestream.app import build_trainer, models_topic, normal_windows_topic
from aestream.commands.simulate import Plant
from aestream.config import Config
from aestream.errors import ConfigError
from aestream.kafka.models_topic import KafkaModelStore
from aestream.kafka.normal_windows import NormalWindowsFeed
from aestream.retrain.stage import END_MS_HEADER, encode_window
from aestream.training.fit import sliding_windows

pytestmark = pytest.mark.integration

KEY = "trainer test key"


def _send_normal_windows(cfg: Config, n_steps: int = 1200) -> int:
    """What workers send: windows of the plant's normal readings after v0001's training stretch."""
    plant = Plant(4, cfg.stream.channels, seed=0)
    plant.signal(800)
    producer = KafkaProducer(bootstrap_servers=list(cfg.kafka.bootstrap_servers), linger_ms=5)
    n = 0
    for i, series in enumerate(plant.signal(n_steps, step0=800)):
        for j, w in enumerate(sliding_windows(series, cfg.stream.window_size, 4)):
            end_ms = 1_767_225_600_000 + (j * 4 + cfg.stream.window_size - 1) * 1000
            producer.send(normal_windows_topic(cfg), key=f"sensor-{i:02d}".encode(), value=encode_window(w),
                          headers=[(END_MS_HEADER, str(end_ms).encode())])
            n += 1
    producer.send(normal_windows_topic(cfg), key=b"x", value=b"not a window", headers=[(END_MS_HEADER, b"1")])
    producer.flush()
    producer.close()
    return n


def test_the_trainer_reads_the_topic_back_retrains_and_reports(kafka_config: Config, train_small: Any) -> None:
    cfg = kafka_config.replace(
        fleet={"models": "kafka", "retrain_in": "trainer", "model_key": KEY},
        model={"family": "vanilla", "epochs": 15, "hidden_size": 32, "latent_size": 6, "device": "cpu",
               "torch_threads": 1, "input_smoothing": 1},
        retrain={"enabled": True, "isolation": "thread", "n_min_windows": 100, "gate_max_far": 0.05,
                 "gate_tolerance": 1.0, "epochs": 60})
    store = KafkaModelStore(cfg.kafka, models_topic(cfg), KEY.encode())
    store.publish(train_small(cfg))
    app = build_trainer(cfg)  # creates the normal-windows topic
    sent = _send_normal_windows(cfg)
    assert app.ops is not None
    base = f"http://127.0.0.1:{app.ops.port}"
    try:
        assert app.catch_up() == 0, "nothing was in the topic when the trainer started"
        deadline = time.monotonic() + 60
        while len(app.reservoir) < sent and time.monotonic() < deadline:
            app._take(500)
        assert len(app.reservoir) == sent and app.feed.n_bad == 1, "every window in, the stray message skipped"
        ready = json.loads(urllib.request.urlopen(f"{base}/readyz").read())
        assert ready == {"ready": True, "checks": {"caught_up": True, "broker_reachable": True}}, ready
        outcome = app.retraining.run_now()
        assert outcome.status == "published" and outcome.version == "v0002", outcome.reason
        assert outcome.gate is not None and outcome.gate["candidate_recall"] is not None
        metrics = urllib.request.urlopen(f"{base}/metrics").read().decode()
        assert 'aestream_retrains_total{outcome="published"} 1.0' in metrics
        # a worker's gauges here (at 0) read as a worker without a model: AestreamNoModelServed fired for good
        assert "aestream_model_loaded" not in metrics and "aestream_assigned_partitions" not in metrics
    finally:
        app.stop()
        app.feed.close()
        app.ops.stop()
    reader = KafkaModelStore(cfg.kafka, models_topic(cfg), KEY.encode())
    assert reader.current() == "v0002" and reader.load().info["retrain"]["n_sensors"] == 4
    reader.close()
    store.close()


def test_a_partition_added_to_the_normal_windows_topic_is_read_from_its_start(kafka_config: Config) -> None:
    topic = normal_windows_topic(kafka_config)
    feed = NormalWindowsFeed(kafka_config.kafka, topic, max_age_s=3600)  # makes the topic
    bootstrap = list(kafka_config.kafka.bootstrap_servers)
    try:
        meta = KafkaConsumer(bootstrap_servers=bootstrap)
        n = len(meta.partitions_for_topic(topic))
        meta.close()
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.create_partitions({topic: NewPartitions(total_count=n + 1)})
        finally:
            admin.close()
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        window = np.arange(64, dtype=np.float32).reshape(16, 4)
        for end_ms in (1_000, 2_000):  # both before the feed looks: read from the partition's start, not its end
            producer.send(topic, encode_window(window), key=b"pump-7", partition=n,
                          headers=[(END_MS_HEADER, str(end_ms).encode())]).get(30)
        producer.close()
        got: list[tuple[str, int, np.ndarray]] = []
        deadline = time.monotonic() + 60  # the feed's metadata: refreshed every few seconds
        while len(got) < 2 and time.monotonic() < deadline:
            got += feed.poll(200)
        assert [(s, e) for s, e, _ in got] == [("pump-7", 1_000), ("pump-7", 2_000)], got
        assert np.array_equal(got[0][2], window)
    finally:
        feed.close()


def test_a_trainer_needs_the_fleet_mode(kafka_config: Config) -> None:
    with pytest.raises(ConfigError, match=r'fleet.retrain_in = "worker" makes each worker retrain on its own'):
        build_trainer(kafka_config)


def test_np_windows_round_trip_through_the_topic_codec() -> None:
    from aestream.retrain.stage import decode_window

    w = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    assert np.array_equal(decode_window(encode_window(w)), w)
    with pytest.raises(ValueError, match=r"2-d float32"):
        decode_window(encode_window(np.zeros(3)))


def test_a_retrain_now_beside_the_running_trainer_does_not_need_its_port(
        kafka_config: Config, tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from aestream.commands.cli import main

    with socket.socket() as trainers_port:  # the trainer's endpoints, served on this host
        trainers_port.bind(("127.0.0.1", 0))
        trainers_port.listen()
        cfg = kafka_config.replace(fleet={"models": "kafka", "retrain_in": "trainer"}, retrain={"enabled": True},
                                   ops={"trainer_metrics_port": trainers_port.getsockname()[1]})
        path = tmp_path / "config.toml"
        path.write_text(cfg.to_toml())
        monkeypatch.setenv("AESTREAM_MODEL_KEY", KEY)
        assert main(["--config", str(path), "retrain"]) == 1  # not 2, "cannot be served": an empty reservoir
    outcome = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert outcome["status"] == "skipped" and "reservoir" in outcome["reason"], outcome


def _trainer(feed: Any) -> Any:
    """A trainer reading ``feed`` into a reservoir of 16 x 4 windows, with no retraining."""
    from aestream.app import TrainerApp
    from aestream.retrain.reservoir import Reservoir

    return TrainerApp(feed, Reservoir(100, 16, 4, half_life_s=1e6, max_age_s=1e9), retraining=None)  # type: ignore[arg-type]


def test_a_trainer_told_another_window_shape_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    class _Feed:  # what the workers sent: windows of 20 readings, the trainer's config says 16
        def poll(self, timeout_ms: int) -> list[tuple[str, int, np.ndarray]]:
            return [(f"sensor-{i}", 1_767_225_600_000, np.zeros((20, 4), np.float32)) for i in range(3)]

    app = _trainer(_Feed())
    with caplog.at_level(logging.WARNING, logger="aestream.app"):
        assert app._take(0) == 0 and app._take(0) == 0
    (said,) = [r.getMessage() for r in caplog.records]
    assert said == ("trainer: skipping the normal windows of 20 readings x 4 channels (sensor sensor-0 and any like "
                    "it): this trainer's [stream] makes 16 x 4 (stream.window_size, stream.channels); give it the "
                    "workers' [stream]")


def test_a_trainer_not_caught_up_in_time_says_so_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    class _Feed:  # a backlog that is never read to its end
        topic = "aestream.normal-windows"

        def caught_up(self) -> bool:
            return False

        def poll(self, timeout_ms: int) -> list[tuple[str, int, np.ndarray]]:
            return [("sensor-0", 1_767_225_600_000, np.zeros((16, 4), np.float32))]

    app = _trainer(_Feed())
    with caplog.at_level(logging.WARNING, logger="aestream.app"):
        n = app.catch_up(timeout_s=0.05)
    assert n >= 1 and app.caught_up
    (said,) = [r.getMessage() for r in caplog.records]
    assert said == (f"trainer: {n} windows read back from aestream.normal-windows in 0.05 s, not all it held at "
                    "start: retraining starts on schedule with what the reservoir has, and the rest is read on the way")


def test_a_max_age_longer_than_the_epoch_reads_the_normal_windows_from_their_start(kafka_config: Config) -> None:
    """``retrain.max_age_s = 1e10`` ("keep them all") made a negative start time, which kafka-python refused:
    ``aestream trainer`` and ``aestream retrain`` died at start."""
    topic = normal_windows_topic(kafka_config)
    producer = KafkaProducer(bootstrap_servers=list(kafka_config.kafka.bootstrap_servers))
    NormalWindowsFeed(kafka_config.kafka, topic, max_age_s=1e10).close()  # makes the topic
    window = np.ones((16, 4), dtype=np.float32)
    producer.send(topic, encode_window(window), key=b"pump-7", headers=[(END_MS_HEADER, b"1000")]).get(30)
    producer.close()
    feed = NormalWindowsFeed(kafka_config.kafka, topic, max_age_s=1e10)
    try:
        got: list[tuple[str, int, np.ndarray]] = []
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            got += feed.poll(200)
        assert [(s, e) for s, e, _ in got] == [("pump-7", 1_000)]
    finally:
        feed.close()
