"""``aestream demo``: the whole pipeline on a small simulated plant, end to end on a real broker.

Starts the local broker when the configured one does not answer (and it is the local default), trains the
configured family on the plant's normal start, publishes a stream with anomalies injected at known times, runs
the worker, prints the anomaly events as they arrive on the output topic, and ends with
``detected X of Y injected anomalies``.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from aestream.app import build_app
from aestream.commands.simulate import Injected, Plant
from aestream.config import Config
from aestream.kafka.kafka_python import ensure_topics, open_sink, tail_topic, wait_for_broker
from aestream.models.store import ModelStore
from aestream.stream.codec import encode_reading
from aestream.stream.events import iso_ms
from aestream.stream.messages import Outgoing
from aestream.training.build import train_bundle

__all__ = ["DemoResult", "match_events", "run_demo", "start_local_broker"]

log = logging.getLogger(__name__)

KAFKA_SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "kafka.sh"
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def start_local_broker(bootstrap: str) -> bool:
    """Start ``deploy/kafka/kafka.sh`` on the bootstrap's port if nothing listens there; ``True`` if started."""
    host, _, port = bootstrap.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return False
    except OSError:
        pass
    if host not in LOCAL_HOSTS or not KAFKA_SCRIPT.is_file():
        raise SystemExit(f"no Kafka broker answers at {bootstrap}; start one or set kafka.bootstrap_servers")
    print(f"starting a local Kafka broker on {bootstrap} (jars are fetched once, then cached) ...", flush=True)
    subprocess.run(["bash", str(KAFKA_SCRIPT), "start", port], check=True)
    return True


def match_events(injected: list[Injected], events: list[dict[str, Any]], slack_ms: int) -> tuple[int, int]:
    """How many injected anomalies got an event of their sensor whose window ends inside
    ``[start, end + slack]``, and how many events matched no injection.

    >>> inj = [Injected("s", "shift", 1000, 2000, ("a",))]
    >>> match_events(inj, [{"sensor": "s", "window_end_ms": 2500}, {"sensor": "t", "window_end_ms": 1}], 1000)
    (1, 1)
    """
    def hits(i: Injected, e: dict[str, Any]) -> bool:
        return e["sensor"] == i.sensor and i.start_ms <= e["window_end_ms"] <= i.end_ms + slack_ms

    detected = sum(any(hits(i, e) for e in events) for i in injected)
    stray = sum(not any(hits(i, e) for i in injected) for e in events)
    return detected, stray


class DemoResult:
    def __init__(self, detected: int, injected: int, stray: int, events: int) -> None:
        self.detected, self.injected, self.stray, self.events = detected, injected, stray, events


def run_demo(cfg: Config, out: TextIO = sys.stdout, n_sensors: int = 6, train_steps: int = 1200,
             stream_steps: int = 900, seed: int = 7) -> DemoResult:
    """Run the demo with ``cfg`` (topics and group get a fresh per-run suffix)."""
    run = time.strftime("%Y%m%d-%H%M%S")
    k = cfg.kafka
    cfg = cfg.replace(kafka={"input_topics": (f"demo-readings-{run}",), "output_topic": f"demo-anomalies-{run}",
                             "dead_letter_topic": f"demo-dead-letter-{run}", "group_id": f"demo-{run}"},
                      paths={"model_dir": str(Path(cfg.paths.model_dir) / f"demo-{run}")})
    start_local_broker(k.bootstrap_servers[0])
    wait_for_broker(cfg.kafka)
    ensure_topics(cfg.kafka, {cfg.kafka.input_topics[0]: 3, cfg.kafka.output_topic: 1, cfg.kafka.dead_letter_topic: 1})

    plant = Plant(n_sensors, cfg.stream.channels, seed=seed)
    start_ms = int(time.time() * 1000) - (train_steps + stream_steps) * plant.period_ms
    normal = plant.signal(train_steps)
    print(f"training a {cfg.model.family} autoencoder on {train_steps} normal readings of {n_sensors} sensors ...",
          file=out, flush=True)
    t0 = time.monotonic()
    bundle = train_bundle(list(normal), cfg.stream, cfg.model, cfg.threshold,
                          info={"trained_on": "demo plant normal start"})
    version = ModelStore(cfg.paths.model_dir).publish(bundle)
    print(f"model {version} trained in {time.monotonic() - t0:.1f} s; threshold {bundle.threshold:.3g}",
          file=out, flush=True)

    step = stream_steps // 5
    plan = [(i % n_sensors, kind, step * (1 + i) + train_steps, 60)
            for i, kind in enumerate(("shift", "decouple", "oscillation", "shift"))]
    readings = plant.readings(stream_steps, start_ms, plan, step0=train_steps)
    sink = open_sink(cfg.kafka)
    topic = cfg.kafka.input_topics[0]
    for sensor, ts, values in readings:
        sink.send(Outgoing(topic, encode_reading(sensor, ts, values), sensor.encode()))
    sink.flush()
    sink.close()
    print(f"published {len(readings)} readings with {len(plant.injected)} injected anomalies to {topic}",
          file=out, flush=True)
    for inj in plant.injected:
        print(f"  injected {inj.kind:<11} on {inj.sensor} {iso_ms(inj.start_ms)} .. {iso_ms(inj.end_ms)}",
              file=out, flush=True)

    app = build_app(cfg.replace(ops={"metrics_enabled": False}))
    worker = app.worker
    thread = threading.Thread(target=app.run, kwargs={"max_idle_s": 5.0}, name="worker", daemon=True)
    thread.start()
    events: list[dict[str, Any]] = []
    for event in tail_topic(cfg.kafka, cfg.kafka.output_topic, until=thread.is_alive):
        events.append(event)
        channels = ", ".join(f"{c['name']} {c['share']:.0%}" for c in event["channels"])
        print(f"ANOMALY {event['severity']:<8} {event['sensor']} window ending {event['window_end']} "
              f"score {event['score']:.2f} (x{event['ratio']:.1f}) channels: {channels}", file=out, flush=True)
    thread.join()
    slack = cfg.stream.window_size * plant.period_ms
    detected, stray = match_events(plant.injected, events, slack)
    t = worker.totals
    print(f"worker: {t.readings} readings, {t.windows} windows scored, {t.events} events, "
          f"{t.dead_letters} dead letters; {stray} events outside the injected anomalies", file=out)
    print(json.dumps({"events": len(events), "stray_events": stray}), file=out)
    print(f"detected {detected} of {len(plant.injected)} injected anomalies", file=out, flush=True)
    return DemoResult(detected, len(plant.injected), stray, len(events))
