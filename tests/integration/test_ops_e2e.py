"""The ops endpoint of a real worker on the real broker: /metrics scraped before and after readings flow (names,
types, values that move), and /readyz turning 503 when the broker goes away (a private broker, so the session's
broker keeps serving the other tests)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from faultkit import Broker, wait_until  # tests/faults, on the path by conftest
from prometheus_client.parser import text_string_to_metric_families

from aestream.app import build_app
from aestream.commands.simulate import Plant
from aestream.config import Config
from aestream.kafka.kafka_python import ensure_topics, wait_for_broker
from aestream.models.store import ModelStore
from aestream.ops.server import OpsServer
from aestream.stream.codec import encode_reading
from aestream.worker import Worker

pytestmark = pytest.mark.integration

START_MS = 1_767_225_600_000
OPS = {"metrics_port": 0, "metrics_host": "127.0.0.1", "lag_interval_s": 0.2, "broker_check_timeout_s": 0.5}


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _scrape(server: OpsServer) -> dict[str, Any]:
    status, body = _get(server.url + "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    return {"types": {n: f.type for n, f in families.items()},
            "samples": {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values()
                        for s in f.samples}}


def _value(scrape: dict[str, Any], name: str, **labels: str) -> float | None:
    return scrape["samples"].get((name, tuple(sorted(labels.items()))))


def _start(cfg: Config, kafka_tools: dict[str, Any]) -> tuple[Worker, OpsServer, threading.Thread]:
    """The worker and endpoints ``aestream run`` builds (:func:`aestream.app.build_app`), the loop in a thread."""
    app = build_app(cfg)
    worker, server = app.worker, app.ops
    assert server is not None
    thread = threading.Thread(target=worker.run, name="worker", daemon=True)
    thread.start()
    return worker, server, thread


def _ready(server: OpsServer) -> bool:
    return _get(server.url + "/readyz")[0] == 200


def test_metrics_are_scraped_with_their_names_and_types_and_move_as_readings_flow(
        topics: Config, kafka_tools: dict[str, Any], train_small: Any) -> None:
    cfg = topics.replace(ops=OPS)
    bundle = train_small(cfg)
    bundle.threshold = 1e-9  # every window alarms, as critical: the anomaly counter must move
    ModelStore(cfg.paths.model_dir).publish(bundle)
    worker, server, thread = _start(cfg, kafka_tools)
    try:
        before = _scrape(server)
        types = before["types"]
        for name, kind in {"aestream_readings": "counter", "aestream_windows_scored": "counter",
                           "aestream_anomalies": "counter", "aestream_dead_letters": "counter",
                           "aestream_batch_duration_seconds": "histogram", "aestream_consumer_lag": "gauge",
                           "aestream_model_info": "gauge", "aestream_retrains": "counter",
                           "aestream_webhook_failures": "counter"}.items():
            assert types.get(name) == kind, (name, types.get(name))
        assert _value(before, "aestream_readings_total") == 0
        assert _value(before, "aestream_anomalies_total", severity="critical") == 0
        wait_until(lambda: _ready(server), 60, what="/readyz 200")
        ready = json.loads(_get(server.url + "/readyz")[1])
        assert ready == {"ready": True, "checks": {"partitions_assigned": True, "model_loaded": True,
                                                  "broker_reachable": True}}

        plant = Plant(4, cfg.stream.channels, seed=0)
        readings = plant.readings(60, START_MS)
        messages = [(s.encode(), encode_reading(s, ts, v)) for s, ts, v in readings]
        kafka_tools["produce"](cfg, [*messages, (b"sensor-00", b"not json"), (b"sensor-01", b"{}")])
        wait_until(lambda: _value(_scrape(server), "aestream_readings_total") == len(readings), 60,
                   what="every reading counted")
        def lag_read() -> bool:
            scrape = _scrape(server)
            lag = sum(v for (n, _), v in scrape["samples"].items() if n == "aestream_consumer_lag")
            return lag == 0 and _value(scrape, "aestream_assigned_partitions") == 2

        wait_until(lag_read, 60, what="the lag read after the last batch")

        after = _scrape(server)
        windows = _value(after, "aestream_windows_scored_total")
        assert windows == 4 * ((60 - cfg.stream.window_size) // cfg.stream.stride + 1)
        assert _value(after, "aestream_anomalies_total", severity="critical") == windows
        assert _value(after, "aestream_dead_letters_total", reason="invalid") == 2
        assert _value(after, "aestream_records_total") == len(messages) + 2
        assert (_value(after, "aestream_batch_duration_seconds_count") or 0) >= 1
        assert (_value(after, "aestream_batch_duration_seconds_sum") or 0) > 0
        topic = cfg.kafka.input_topics[0]
        assert {k for (n, k) in after["samples"] if n == "aestream_consumer_lag"} == {
            (("partition", "0"), ("topic", topic)), (("partition", "1"), ("topic", topic))}
        assert _value(after, "aestream_model_info", family="vanilla", version="v0001") == 1
        assert _value(after, "aestream_model_loaded") == 1
        assert _get(server.url + "/healthz")[0] == 200
    finally:
        worker.stop()
        thread.join(30)
        server.stop()
    assert not thread.is_alive()


@pytest.fixture()
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Callable[[], None]]]:
    """A broker of this test alone, and a function that stops it."""
    broker = Broker(tmp_path_factory.mktemp("kafka-private"))
    broker.start()
    try:
        yield broker.bootstrap, broker.stop
    finally:
        broker.stop()


@pytest.mark.slow
def test_readiness_turns_false_when_the_broker_stops(
        private_broker: tuple[str, Callable[[], None]], kafka_config: Config, kafka_tools: dict[str, Any],
        train_small: Any) -> None:
    bootstrap, stop_broker = private_broker
    cfg = kafka_config.replace(kafka={"bootstrap_servers": (bootstrap,)}, ops=OPS)
    wait_for_broker(cfg.kafka)
    k = cfg.kafka
    ensure_topics(k, {k.input_topics[0]: 2, k.output_topic: 1, k.dead_letter_topic: 1})
    ModelStore(cfg.paths.model_dir).publish(train_small(cfg))
    worker, server, thread = _start(cfg, kafka_tools)
    try:
        wait_until(lambda: _ready(server), 60, what="/readyz 200")
        stop_broker()
        wait_until(lambda: not _ready(server), 30, what="/readyz 503")
        status, body = _get(server.url + "/readyz")
        doc = json.loads(body)
        assert status == 503 and doc["ready"] is False and doc["checks"]["broker_reachable"] is False
        assert doc["checks"]["model_loaded"] is True
        assert _get(server.url + "/healthz")[0] == 200  # alive: a restart would not bring the broker back
    finally:
        worker.stop()
        thread.join(60)  # closing the consumer without a broker may take a while; the thread is a daemon
        server.stop()
