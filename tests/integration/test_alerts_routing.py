"""Alert routing end to end: rules to topics and a local HTTP receiver; failing webhooks neither slow the
worker nor lose deliveries (they end in the dead-letter topic after the retries)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from faultkit import wait_until  # tests/faults, on the path by conftest

from aestream.alerts import AlertStage, build_alert_stage
from aestream.commands.simulate import Plant
from aestream.config import Config
from aestream.kafka.kafka_python import ensure_topics
from aestream.models.store import ModelStore
from aestream.stream.codec import encode_reading

pytestmark = pytest.mark.integration

START_MS = 1_767_225_600_000


class Receiver:
    """A local HTTP endpoint on 127.0.0.1: ``mode`` ok (204), fail (500) or hang (answers after ``hang_s``)."""

    def __init__(self, mode: str, hang_s: float = 5.0) -> None:
        self.mode, self.hang_s = mode, hang_s
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.bodies.append(json.loads(body))
                receiver.headers.append(dict(self.headers))
                if receiver.mode == "hang":
                    receiver.released.wait(receiver.hang_s)
                self.send_response(500 if receiver.mode == "fail" else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receivers() -> Iterator[dict[str, Receiver]]:
    made = {mode: Receiver(mode) for mode in ("ok", "fail", "hang")}
    yield made
    for r in made.values():
        r.close()


def _readings(cfg: Config, n_sensors: int, steps: int, wild: dict[int, float], mild: list[int],
              rename: dict[str, str] | None = None) -> list[tuple[bytes, bytes]]:
    plant = Plant(n_sensors, cfg.stream.channels, seed=0, prefix="pump")
    plant.signal(800)
    values = plant.signal(steps, 800)
    for i in mild:
        plant.inject(values, i, "shift", 900, 100, START_MS, 800)
    for i, offset in wild.items():
        values[i, 100:200] += offset
    rename = rename or {}
    out = []
    for step in range(steps):
        ts = START_MS + (800 + step) * 1000
        for i, s in enumerate(plant.sensors):
            name = rename.get(s, s)
            out.append((name.encode(), encode_reading(name, ts, [round(float(v), 5) for v in values[i, step]])))
    return out


def _topics(cfg: Config, *names: str) -> None:
    ensure_topics(cfg.kafka, dict.fromkeys(names, 1))


def test_critical_pump_events_reach_topic_a_and_the_webhook_and_warnings_only_topic_b(
        topics: Config, kafka_tools: dict[str, Any], train_small: Any, receivers: dict[str, Receiver]) -> None:
    out = topics.kafka.output_topic
    a, b, default = f"{out}-a", f"{out}-b", f"{out}-alerts"
    cfg = topics.replace(threshold={"quantile": 0.999, "factor": 1.5, "k": 2, "n": 3}, alerts={
        "enabled": True, "topic": default, "n_resolve_windows": 5, "bands": {"warning": 1.0, "critical": 1000.0},
        "sinks": {"a": {"type": "topic", "topic": a}, "b": {"type": "topic", "topic": b},
                  "hook": {"type": "webhook", "url": receivers["ok"].url, "timeout_s": 2.0}},
        "routes": ({"severity": "critical", "sensor": "pump-*", "sinks": ["a", "hook"]},
                   {"severity": "warning", "sinks": ["b"]})})
    _topics(cfg, a, b, default)
    ModelStore(cfg.paths.model_dir).publish(train_small(cfg))
    kafka_tools["produce"](cfg, _readings(cfg, 4, 300, wild={0: 50.0, 3: 50.0}, mild=[1],
                                          rename={"pump-03": "fan-03"}))
    stage = build_alert_stage(cfg)
    assert stage is not None
    worker = kafka_tools["make_worker"](cfg, stages=[stage])
    kafka_tools["run_until_idle"](worker)
    wait_until(lambda: stage.pending_deliveries == 0, 30, 0.05, "every delivery")
    stage.close()

    def read(topic: str) -> list[dict[str, Any]]:
        return [json.loads(m.value) for m in kafka_tools["read_all"](cfg, topic)]

    in_a, in_b, in_default = read(a), read(b), read(default)
    assert in_a and {(e["sensor"], e["severity"]) for e in in_a} == {("pump-00", "critical")}
    assert in_b and {e["severity"] for e in in_b} == {"warning"}
    assert "pump-01" in {e["sensor"] for e in in_b} and "pump-01" not in {e["sensor"] for e in in_a + in_default}
    assert {(e["sensor"], e["severity"]) for e in in_default} == {("fan-03", "critical")}  # no rule: the default
    hooked = receivers["ok"].bodies
    assert sorted(e["event_id"] for e in hooked) == sorted(e["event_id"] for e in in_a)
    assert receivers["ok"].headers[0]["Content-Type"] == "application/json"
    assert receivers["ok"].headers[0]["Idempotency-Key"] == hooked[0]["event_id"]
    assert not {e["event_id"] for e in in_a} & {e["event_id"] for e in in_b}


def _timed_run(cfg: Config, kafka_tools: dict[str, Any], n_readings: int) -> tuple[float, AlertStage]:
    """Step a fresh worker (own group, own state) over the whole input; readings per second once it runs."""
    run = uuid.uuid4().hex[:6]
    cfg = cfg.replace(kafka={"group_id": f"{cfg.kafka.group_id}-{run}"},
                      paths={"state_dir": str(Path(cfg.paths.state_dir) / run)})
    stage = build_alert_stage(cfg)
    assert stage is not None
    worker = kafka_tools["make_worker"](cfg, stages=[stage])
    worker.refresh_model(force=True)
    deadline = time.monotonic() + 120
    while not worker.step().records:
        assert time.monotonic() < deadline, "the worker got no records"
    t0, base = time.perf_counter(), worker.totals.readings
    while worker.totals.readings < n_readings:
        worker.step()
        assert time.monotonic() < deadline, "the worker did not finish the input"
    rate = (worker.totals.readings - base) / (time.perf_counter() - t0)
    while stage.pending_deliveries:  # let the webhooks give up, then hand their dead letters to the worker
        worker.step()
        assert time.monotonic() < deadline, "webhook deliveries did not end"
    worker.step()
    worker.close()
    stage.close()
    return rate, stage


@pytest.mark.slow
def test_failing_webhooks_never_stop_the_stream_and_end_in_the_dead_letter_topic(
        topics: Config, kafka_tools: dict[str, Any], train_small: Any, receivers: dict[str, Receiver]) -> None:
    out = topics.kafka.output_topic
    common = {"enabled": True, "topic": f"{out}-alerts", "bands": {"warning": 1.0, "critical": 1000.0}}
    cfg = topics.replace(threshold={"k": 2, "n": 3}, alerts=common)
    hooks = {"err": {"type": "webhook", "url": receivers["fail"].url, "retries": 2, "backoff_s": 0.02},
             "hang": {"type": "webhook", "url": receivers["hang"].url, "timeout_s": 0.2, "retries": 1,
                      "backoff_s": 0.02, "queue_size": 4}}
    failing = topics.replace(threshold={"k": 2, "n": 3}, alerts={
        **common, "dead_letter_topic": f"{out}-alerts-dlq", "sinks": hooks,
        "routes": ({"severity": "critical", "sensor": "pump-*", "sinks": ["topic", "err", "hang"]},)})
    _topics(cfg, cfg.alerts.topic, failing.alerts.dead_letter_topic)
    ModelStore(cfg.paths.model_dir).publish(train_small(cfg))
    n_sensors, steps = 24, 800
    kafka_tools["produce"](cfg, _readings(cfg, n_sensors, steps, wild={i: 50.0 for i in range(n_sensors)}, mild=[]))
    n = n_sensors * steps

    # Throughput with and without failing webhooks is a figure, not a test: benchmarks/webhook_throughput.py.
    stages = [_timed_run(failing, kafka_tools, n)[1]]
    opened = stages[-1].counts["opened"]
    assert opened >= n_sensors  # every sensor is anomalous: one episode (at least) each, routed to both hooks
    routed = stages[-1].counts["sink.err"]
    dead = kafka_tools["read_all"](failing, failing.alerts.dead_letter_topic)
    by_sink: dict[str, list[Any]] = {"err": [], "hang": []}
    for m in dead:
        by_sink[m.headers["aestream.sink"].decode()].append(m)
    assert len(by_sink["err"]) == len(by_sink["hang"]) == routed  # every delivery
    assert {m.headers["aestream.reason"] for m in by_sink["err"]} == {b"HTTP 500 after 3 attempt(s)"}
    assert len(receivers["fail"].bodies) == 3 * routed  # 1 try + 2 retries each
    reasons = {m.headers["aestream.reason"].decode() for m in by_sink["hang"]}
    assert all(r == "webhook queue full (4 waiting)" or (r.startswith("ReadTimeoutError: ") and "timed out" in r
                                                       and r.endswith(" after 2 attempt(s)")) for r in reasons), reasons
    assert all(json.loads(m.value)["type"] in ("opened", "updated", "resolved") for m in dead)
