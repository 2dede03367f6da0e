"""Models served from the compacted models topic on the real broker: publish, follow, refuse, hold, resume."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from aestream.app import build_app, models_topic, open_model_store
from aestream.config import Config
from aestream.errors import BundleError, ConfigError
from aestream.kafka.models_topic import KafkaModelStore
from aestream.models.bundle import pack_bundle, unpack_bundle

pytestmark = pytest.mark.integration

KEY = "test fleet key"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def cfg(kafka_config: Config) -> Config:
    return kafka_config.replace(fleet={"models": "kafka", "model_key": KEY})


def _tampered(packed: bytes) -> bytes:
    """The bundle with its threshold raised and its manifest's checksums recomputed (the signature kept)."""
    files = unpack_bundle(packed, "test")
    meta = json.loads(files["meta.json"])
    meta["threshold"], meta["version"] = 1e9, "v0003"
    files["meta.json"] = json.dumps(meta).encode()
    manifest = json.loads(files["manifest.json"])
    manifest["sha256"]["meta.json"] = hashlib.sha256(files["meta.json"]).hexdigest()
    files["manifest.json"] = json.dumps(manifest).encode()
    return pack_bundle(files)


def test_a_worker_serves_from_the_topic_and_refuses_a_tampered_bundle(cfg: Config, train_small: Any) -> None:
    publisher = open_model_store(cfg)
    assert isinstance(publisher, KafkaModelStore)
    assert publisher.publish(train_small(cfg)) == "v0001" and publisher.publish(train_small(cfg)) == "v0002"
    app = build_app(cfg.replace(ops={"metrics_enabled": False}))
    worker = app.worker
    try:
        worker.refresh_model(force=True)
        assert worker.bundle is not None and worker.bundle.version == "v0002", "a worker started later finds it"
        threshold = worker.bundle.threshold
        # someone with write access to the topic, without the key: a changed threshold, recomputed checksums
        producer = KafkaProducer(bootstrap_servers=list(cfg.kafka.bootstrap_servers))
        producer.send(models_topic(cfg), key=b"bundle/v0003", value=_tampered(publisher._bundles["v0002"]),
                      partition=0)
        producer.send(models_topic(cfg), key=b"current", value=b'{"version": "v0003"}', partition=0)
        producer.flush()
        producer.close()
        reader = KafkaModelStore(cfg.kafka, models_topic(cfg), KEY.encode())
        assert reader.current() == "v0003"
        with pytest.raises(BundleError, match=r"signature that does not match its content"):
            reader.load()
        worker.refresh_model(force=True)
        assert worker.bundle.version == "v0002" and worker.bundle.threshold == threshold, "still the good one"
        reader.close()
    finally:
        app.worker.close()
        publisher.close()


def test_a_rollback_holds_against_a_later_publish_until_resume(cfg: Config, train_small: Any) -> None:
    trainer = KafkaModelStore(cfg.kafka, models_topic(cfg), KEY.encode())
    operator = KafkaModelStore(cfg.kafka, models_topic(cfg), KEY.encode())
    bundle = train_small(cfg)
    for _ in range(2):
        trainer.publish(bundle)
    assert operator.rollback() == "v0001"
    trainer.publish(bundle)  # a training that was under way lands after the rollback
    worker_view = KafkaModelStore(cfg.kafka, models_topic(cfg), KEY.encode())
    assert worker_view.versions() == ["v0001", "v0002", "v0003"]
    assert worker_view.current() == "v0001" and worker_view.held() == "v0001", "the hold wins"
    assert operator.resume() == "v0001"
    fresh = KafkaModelStore(cfg.kafka, models_topic(cfg), KEY.encode())
    assert fresh.current() == "v0001" and fresh.held() is None, "the held version serves until the next publish"
    trainer.current()  # the trainer reads the pointers before it publishes again
    assert trainer.publish(bundle) == "v0004"
    _eventually(lambda: fresh.current() == "v0004", "a reader to follow the publish")
    for s in (trainer, operator, worker_view, fresh):
        s.close()


def test_two_publishers_never_give_two_bundles_one_version(cfg: Config, train_small: Any) -> None:
    trainer = KafkaModelStore(cfg.kafka, models_topic(cfg), KEY.encode())
    manual = KafkaModelStore(cfg.kafka, models_topic(cfg), KEY.encode())  # `aestream retrain` beside the trainer
    bundle = train_small(cfg)
    assert trainer.publish(bundle) == "v0001"
    assert manual.publish(bundle) == "v0002"
    assert trainer.publish(bundle) == "v0003", "the trainer published over a version it had not read yet"
    worker_view = KafkaModelStore(cfg.kafka, models_topic(cfg), KEY.encode())
    assert worker_view.versions() == ["v0001", "v0002", "v0003"] and worker_view.current() == "v0003"
    for s in (trainer, manual, worker_view):
        s.close()


def test_two_publishers_at_the_same_moment_take_two_versions(cfg: Config, train_small: Any) -> None:
    stores = [KafkaModelStore(cfg.kafka, models_topic(cfg), KEY.encode()) for _ in range(2)]
    assert stores[0].publish(train_small(cfg)) == "v0001"
    both_read = threading.Barrier(2, timeout=60)
    for store in stores:  # each publish's first read to the end: both have read v0001 alone, then go on
        def read(to_end: bool = False, read: Any = store._read, done: list[bool] = []) -> None:  # noqa: B006
            read(to_end)
            if to_end and not done:
                done.append(True)
                both_read.wait()
        store._read = read  # type: ignore[method-assign]
    bundles = [copy.deepcopy(train_small(cfg)) for _ in range(2)]
    bundles[0].threshold, bundles[1].threshold = 111.0, 222.0
    got: dict[int, str] = {}
    threads = [threading.Thread(target=lambda i=i: got.update({i: stores[i].publish(bundles[i])})) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(got.values()) == ["v0002", "v0003"], got
    reader = KafkaModelStore(cfg.kafka, models_topic(cfg), KEY.encode())
    assert reader.versions() == ["v0001", "v0002", "v0003"]
    for i in (0, 1):  # each version holds the bundle its publisher wrote
        assert reader.load(got[i]).threshold == bundles[i].threshold
    for s in (*stores, reader):
        s.close()


def test_pruning_drops_the_claims_of_versions_gone_and_of_versions_never_published(cfg: Config,
                                                                                    train_small: Any) -> None:
    store = KafkaModelStore(cfg.kafka, models_topic(cfg), KEY.encode(), keep=2)
    bundle = train_small(cfg)
    assert store.publish(bundle) == "v0001"
    store._send("claim/v0002", b'{"by": "a publisher that died before its bundle"}')
    assert [store.publish(bundle) for _ in range(3)] == ["v0003", "v0004", "v0005"]
    reader = KafkaModelStore(cfg.kafka, models_topic(cfg), KEY.encode())
    assert reader.versions() == ["v0004", "v0005"] and sorted(reader._claims) == ["v0004", "v0005"]
    for s in (store, reader):
        s.close()


def _eventually(pred: Any, what: str, timeout_s: float = 10.0) -> None:
    """A reader takes what is new on each call (a non-blocking poll): ask until it has it."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_the_models_commands_work_against_the_topic(cfg: Config, train_small: Any, tmp_path: Path) -> None:
    store = KafkaModelStore(cfg.kafka, models_topic(cfg), KEY.encode())
    for _ in range(2):
        store.publish(train_small(cfg))
    store.close()
    conf = tmp_path / "fleet.toml"
    conf.write_text(cfg.to_toml())  # the key stays out of the file: it comes from the environment

    def aestream(*args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "AESTREAM_MODEL_KEY": key}
        return subprocess.run([sys.executable, "-m", "aestream", "--config", str(conf), *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=120)

    assert "AESTREAM_MODEL_KEY" not in conf.read_text() and KEY not in conf.read_text()
    listed = aestream("models", "list")
    assert listed.returncode == 0 and listed.stdout.count("v000") == 2 and "* v0002" in listed.stdout, listed
    rolled = aestream("models", "rollback")
    assert rolled.stdout.strip() == "current version is now v0001", rolled.stderr
    assert "(held by a rollback)" in aestream("models", "list").stdout
    resumed = aestream("models", "resume")
    assert resumed.stdout.strip() == "v0001 serves; retraining publishes again", resumed.stderr
    wrong = aestream("models", "show", "v0002", key="another key")
    assert wrong.returncode == 2 and "does not match its content" in wrong.stderr, wrong.stderr
    none = aestream("models", "list", key="")
    assert none.returncode == 2 and "AESTREAM_MODEL_KEY" in none.stderr


def test_serving_from_kafka_without_a_key_fails_at_start_with_the_fix(kafka_config: Config) -> None:
    with pytest.raises(ConfigError, match=r'fleet.models = "kafka" needs the key .* AESTREAM_MODEL_KEY'):
        open_model_store(kafka_config.replace(fleet={"models": "kafka"}))
