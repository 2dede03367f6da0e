"""Throughput, latency and memory of the worker against a real broker; the last output line is one JSON object.

    python benchmarks/throughput.py [--bootstrap HOST:PORT] [--messages N]

Without --bootstrap it starts a private broker with deploy/kafka/kafka.sh. Measured in the same run:

* ceiling: a bare kafka-python consumer that only decodes the JSON of the topic (readings/s), with the stdlib's
  json as the issue defines it, and a strict one with msgspec (the worker's JSON library) and gc.freeze();
* pipeline: the full worker (decode, window, score, threshold, events, flush, commit) as shipped on the same topic,
  from its first record: a fleet starting, its sensors calibrating and fine-tuned on the way; and per client in
  service: after 1,000 readings of each sensor and every fine-tune, over the readings that follow them; in service
  also kafka-python with ``kafka.fetch_process`` (off as shipped: fetching and the batched messages' decoding in a
  child process); every one of these runs in each of the rounds, as a ratio to the two ceiling runs around it,
  and reported as the median over the rounds (and each round's ratio);
* the same two for batched messages (100 readings a message), as an array of readings and in the columnar
  form (one sensor's times and rows);
* latency, per client: readings produced at 20 % of that client's measured capacity (after an untimed 2 s
  warm-up, by a producer lingering 2 ms); p50/p99 from a reading's produce time to the produce time of the event
  of the window it closed, over every event, with 2 of the 50 sensors shifted for the whole run (their windows
  emit, as anomalies do in service) and again with a zero threshold (every window emits: 1 event per 4
  readings, the event path at its heaviest), the latter twice: a fleet starting (timed from 2 s after the
  calibration warm-up, while the sensors' fine-tunes run) and in service (timed once every sensor has its own
  baseline and no fine-tune waits); against a bare consumer of the same client reading the same paced stream
  (produce time to receipt), with each every-window p99 as a multiple of that consumer's p99; the bare consumer
  and the two every-window runs in each of ``--latency-rounds`` rounds, each p99 against its round's bare one, and
  reported as the median over the rounds (and each round's figures): one 10 s run's tail differed up to 6× between
  runs;
* memory: RSS per idle sensor beyond its window buffer, for 1k/10k/100k sensors: of the window buffers alone, and
  of a whole worker (``build_app``, baselines off) that has scored one window of each sensor, with retraining
  (``retrain.enabled``, the worker's own reservoir) and alerts on (each sensor's pending reservoir sample and its
  episode state held), and with both off (10k/100k sensors);
* scoring windows/s per model family on one CPU thread (``scoring.py``: batch 256, window 32, the shipped config's
  model settings);
* the event path in process (no broker): a whole worker (``build_app``, a memory source and sink) on single
  readings, every sensor in service, when no window emits and when every window does, taking turns; readings/s by
  the worker thread's CPU time, and what an event costs (``--skip throughput,memory,scoring`` runs this part
  alone, in about 40 s);
* the peer (``peer_quix.py``, the same job written with Quix Streams) on the same topics in every round, on the
  first ``--peer-readings`` readings; aestream / peer ratios of each round's runs; the peer's latency at 20 % of
  its own capacity, and aestream's with each client at that same rate (beside that client's bare consumer), each
  timed for ``--peer-latency-seconds`` (60: that load's few events make a 10 s run's p99 its largest one);
* with CUDA: each family's scoring windows/s on CUDA next to CPU (at 256 windows a call, and at 1,024), and the
  pipeline with ``device = "cuda"``.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import torch
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.record.util import crc32c_c  # None: kafka-python checks CRCs in pure Python
from scoring import rates, scorers  # benchmarks/scoring.py

from aestream.app import build_app
from aestream.commands.simulate import Plant
from aestream.config import Config
from aestream.kafka.kafka_python import ensure_topics
from aestream.models.store import ModelStore
from aestream.ops.instrument import WorkerMetrics
from aestream.ops.metrics import Metrics
from aestream.stream.messages import Record
from aestream.training.build import train_bundle
from aestream.worker import Worker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "faults"))
import faultkit  # noqa: E402  # the tests' private broker, on a port it draws (as in benchmarks/soak.py)

CHANNELS = ("temperature", "pressure", "vibration", "current")
N_SENSORS = 50
IN_SERVICE_WARMUP = 50_000  # readings before the in-service throughput run: 1,000 a sensor (calibration: 400)
SETTLE_TIMEOUT_S = 300  # the longest the in-service latency run waits for the fleet to settle
BATCH = 100


def _produce(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    p = KafkaProducer(bootstrap_servers=[bootstrap], linger_ms=20, batch_size=256 * 1024)
    for k, v in values:
        p.send(topic, key=k, value=v)
    p.flush()
    p.close()


def _plant_readings(n_readings: int) -> list[tuple[str, int, list[float]]]:
    """The bench plant's first ``n_readings`` readings (whole steps of its sensors), in event-time order."""
    return Plant(N_SENSORS, CHANNELS, seed=1).readings(n_readings // N_SENSORS, 1_767_225_600_000)


def _messages(n_readings: int, batch: int, columnar: bool = False) -> list[tuple[bytes, bytes]]:
    """Single readings, batches as arrays of readings, or (``columnar``) batches as one sensor's times and rows."""
    return _encode(_plant_readings(n_readings), batch, columnar)


def _encode(readings: list[tuple[str, int, list[float]]], batch: int, columnar: bool) -> list[tuple[bytes, bytes]]:
    """:func:`_messages` of these readings."""
    if batch == 1:
        return [(s.encode(), json.dumps({"sensor": s, "ts": ts, "values": v}).encode()) for s, ts, v in readings]
    by_sensor: dict[str, list[Any]] = {}
    for s, ts, v in readings:
        by_sensor.setdefault(s, []).append({"sensor": s, "ts": ts, "values": v})
    out = []
    for s, rs in by_sensor.items():
        for i in range(0, len(rs), batch):
            part = rs[i : i + batch]
            doc = {"sensor": s, "ts": [r["ts"] for r in part], "values": [r["values"] for r in part]} \
                if columnar else part
            out.append((s.encode(), json.dumps(doc).encode()))
    return out


def _ceiling(bootstrap: str, topic: str, n_messages: int, strict: bool = False) -> float:
    """The issue's ceiling: a bare kafka-python consumer that only ``json.loads`` each message. ``strict``: with
    the worker's JSON library (msgspec) and its ``gc.freeze()``, so a ratio against it is the pipeline's cost
    alone."""
    loads = msgspec.json.decode if strict else json.loads
    if strict:
        gc.freeze()
    c = KafkaConsumer(bootstrap_servers=[bootstrap], enable_auto_commit=False, max_poll_records=2000)
    tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic))]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    seen = readings = 0
    t0 = time.perf_counter()
    while seen < n_messages:
        for msgs in c.poll(timeout_ms=500).values():
            for m in msgs:
                doc = loads(m.value)
                readings += len(doc) if isinstance(doc, list) else len(doc["ts"]) if isinstance(doc["ts"], list) else 1
            seen += len(msgs)
    dt = time.perf_counter() - t0
    c.close()
    gc.unfreeze()
    return readings / dt


def _worker(cfg: Config, n_messages: int) -> tuple[float, Worker]:
    """``App.run`` (as ``aestream run`` calls it) in a thread, timed from its first records (the group is
    joined) until it has processed ``n_messages``."""
    app = build_app(cfg)
    worker = app.worker
    thread = threading.Thread(target=app.run, daemon=True)
    thread.start()
    while not worker.totals.records:
        time.sleep(0.01)
    t0, first = time.perf_counter(), worker.totals.readings
    while worker.totals.records < n_messages:
        time.sleep(0.01)
    rps = (worker.totals.readings - first) / (time.perf_counter() - t0)
    app.stop()
    thread.join()
    return rps, worker


def _round_ratios(runs: list[tuple[float, int]], ceilings: list[float]) -> list[float]:
    """Each round's readings/s (``runs[r][0]``) over the mean of the two ceiling runs around it (``ceilings[r]``
    and ``ceilings[r + 1]``), so a shared machine's drift cancels."""
    return [rps / ((ceilings[r] + ceilings[r + 1]) / 2) for r, (rps, _) in enumerate(runs)]


def _worker_in_service(cfg: Config, warm: list[tuple[bytes, bytes]],
                       msgs: list[tuple[bytes, bytes]]) -> tuple[float, int]:
    """Readings/s of ``App.run`` in service: it reads ``warm`` (each sensor's calibration, then its fine-tune), and
    once every sensor has its own model and no fine-tune waits, ``msgs`` (the readings after them) are produced
    from another process (librdkafka); timed from that producer's exit, over the backlog it left, to the last.
    Returns the readings/s and the readings timed."""
    bootstrap, topic = cfg.kafka.bootstrap_servers[0], cfg.kafka.input_topics[0]
    _produce(bootstrap, topic, warm)
    app = build_app(cfg)
    worker = app.worker
    thread = threading.Thread(target=app.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while not _in_service(worker, len(warm)) and time.monotonic() < deadline:
        time.sleep(0.05)
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for k, v in msgs:
            f.write(json.dumps([k.decode(), v.decode()]) + "\n")
    subprocess.run([sys.executable, "-c", _BULK_PRODUCER, bootstrap, topic, f.name], check=True)
    os.unlink(f.name)
    t0, first = time.perf_counter(), worker.totals.readings
    while worker.totals.records < len(warm) + len(msgs):
        time.sleep(0.01)
    timed = worker.totals.readings - first
    rps = timed / (time.perf_counter() - t0)
    app.stop()
    thread.join()
    return rps, timed


_BULK_PRODUCER = """
import json, sys
from confluent_kafka import Producer
bootstrap, topic, path = sys.argv[1:4]
p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "queue.buffering.max.messages": 1000000})
for line in open(path):
    k, v = json.loads(line)
    p.produce(topic, key=k.encode(), value=v.encode())
    p.poll(0)
p.flush()
"""

_PACED_PRODUCER = """
import json, os, sys, time
from confluent_kafka import Producer
from aestream.commands.simulate import Plant
bootstrap, topic = sys.argv[1], sys.argv[2]
rate, seconds, n_warm, n_anomalous = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
settled, settle_timeout_s = sys.argv[7], float(sys.argv[8])  # a file the bench creates when the fleet is in service
plant = Plant(50, ("temperature", "pressure", "vibration", "current"), seed=1)  # the plant the model learnt
steps = n_warm // 50 + int(rate * seconds) // 50
# event time ends now (the plant runs faster than real time: starting now would run ahead of stream.max_future_ms)
# the anomalous sensors shift once the warm-up (their calibration) is over, as a fault comes in service
readings = plant.readings(steps, int(time.time() * 1000) - steps * plant.period_ms,
                          [(i, "shift", n_warm // 50, steps - n_warm // 50) for i in range(n_anomalous)])
p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2})  # as producers batch; counted in the latency
def paced(part):
    t0 = time.perf_counter()
    for i, (s, ts, v) in enumerate(part):
        p.produce(topic, key=s.encode(), value=json.dumps({"sensor": s, "ts": ts, "values": v}).encode())
        p.poll(0)
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    p.flush()
paced(readings[:n_warm])  # warm-up: the first fetches of a new topic and group; not timed
time.sleep(2.0)
deadline = time.monotonic() + settle_timeout_s
while settled and not os.path.exists(settled) and time.monotonic() < deadline:
    time.sleep(0.1)
paced(readings[n_warm:])
"""

WARMUP_S = 2.0


def _n_warmup(rate: float) -> int:
    """Readings of the untimed warm-up phase before a paced stream (whole steps of the 50-sensor plant):
    offsets below it are not timed. It covers the sensors' baseline calibration (baselines.n_readings each, during
    which a sensor emits nothing), so the timed phase is a fleet in service."""
    calibration = (Config().baselines.n_readings + 2 * 32) * N_SENSORS  # and two windows (window_size 32)
    return max(int(rate * WARMUP_S), calibration) // N_SENSORS * N_SENSORS


def _transport_latency(bootstrap: str, topic: str, rate: float, seconds: float,
                       client: str) -> tuple[float, float]:
    """The baseline: the same paced stream read by a bare consumer of the same client (produce time → receipt)."""
    lat: list[float] = []
    n_warm = _n_warmup(rate)
    if client == "confluent":
        from confluent_kafka import Consumer

        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-bare", "auto.offset.reset": "earliest"})
        c.subscribe([topic])
        deadline = time.monotonic() + 60
        while not c.assignment() and time.monotonic() < deadline:
            c.poll(0.1)

        def receive() -> int:
            got = [m for m in c.consume(2000, 0.005) if m.error() is None]
            lat.extend(time.time() * 1000 - m.timestamp()[1] for m in got if (m.offset() or 0) >= n_warm)
            return len(got)
    else:
        k = KafkaConsumer(bootstrap_servers=[bootstrap], group_id=f"{topic}-bare", auto_offset_reset="earliest")
        k.subscribe([topic])
        deadline = time.monotonic() + 60
        while not k.assignment() and time.monotonic() < deadline:
            k.poll(timeout_ms=1000)

        def receive() -> int:
            got = [m for msgs in k.poll(timeout_ms=5).values() for m in msgs]
            lat.extend(time.time() * 1000 - m.timestamp for m in got if m.offset >= n_warm)
            return len(got)
    prod = subprocess.Popen(_paced_argv(bootstrap, topic, rate, seconds, n_warm, 0))
    idle = time.monotonic()
    while prod.poll() is None or time.monotonic() - idle < 2.0:
        if receive():
            idle = time.monotonic()
    (c if client == "confluent" else k).close()
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 99))


def _wait_for_partitions(bootstrap: str, topic: str) -> None:
    """kafka-python 3.0.12: a group member that joins before the broker serves a new topic's metadata can stay
    without partitions; the latency run starts its worker only once the topic is served."""
    c = KafkaConsumer(bootstrap_servers=[bootstrap])
    deadline = time.monotonic() + 60
    while not c.partitions_for_topic(topic) and time.monotonic() < deadline:
        time.sleep(0.2)
    c.close()


def _latency(cfg: Config, rate: float, seconds: float, n_anomalous: int,
             in_service: bool = False) -> tuple[float, float, int]:
    """p50/p99 of produce time → event produce time over every event of a paced stream whose first
    ``n_anomalous`` sensors run shifted (the model in ``cfg.paths.model_dir`` decides which windows emit).
    The timed phase starts 2 s after the warm-up (every sensor's calibration), while the sensors' fine-tunes run:
    a fleet starting; ``in_service``: once every sensor has its baseline and no fine-tune waits."""
    bootstrap = cfg.kafka.bootstrap_servers[0]
    _wait_for_partitions(bootstrap, cfg.kafka.input_topics[0])
    app = build_app(cfg)
    worker = app.worker
    source: Any = worker.source  # a Kafka client's source: it has assignment(), which the Source protocol leaves out
    # idle for 30 s ends it: a group that joined before the new topic's metadata waits one refresh for partitions
    thread = threading.Thread(target=app.run, kwargs={"max_idle_s": 120.0 if in_service else 30.0}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not source.assignment() and time.monotonic() < deadline:  # joined the group, partitions assigned
        time.sleep(0.1)
    time.sleep(1.0)
    settled = ""
    if in_service:
        settled = str(Path(cfg.paths.model_dir).parent / f"settled-{cfg.kafka.group_id}")
        threading.Thread(target=_when_in_service, args=(worker, _n_warmup(rate), settled), daemon=True).start()
    _paced(bootstrap, cfg.kafka.input_topics[0], rate, seconds, n_anomalous, settled)
    thread.join(120)
    return _event_latency(bootstrap, cfg.kafka.input_topics[0], cfg.kafka.output_topic, _n_warmup(rate),
                          {"client": cfg.kafka.client, "worker_records": worker.totals.records})


def _latency_of(base: Config, bootstrap: str, client: str, rate: float, seconds: float, mode: str, model_dir: str,
                n_anomalous: int, tag: str) -> tuple[float, float]:
    """:func:`_latency` of the shipped worker on ``client`` on fresh topics; ``mode`` ``""``: the calibrated
    thresholds, else every window emits (``"in_service_..."``: timed once the fleet is in service)."""
    # every window: each sensor's own calibrated threshold (baselines) is scaled to ~0 as well
    factors = {"*": 1e-12} if mode else {}
    # the shipped poll_timeout_ms (200), as a user runs it; the bare consumer polls every 5 ms
    cfg = base.replace(kafka={"bootstrap_servers": (bootstrap,),
                              "input_topics": (_fresh_topic(base, bootstrap, f"lat-{tag}"),),
                              "output_topic": _fresh_topic(base, bootstrap, f"lat-out-{tag}"),
                              "group_id": f"bench-lat-{tag}", "client": client},
                       paths={"model_dir": model_dir}, threshold={"sensors": factors})
    p50, p99, _ = _latency(cfg, rate, seconds, n_anomalous, in_service=mode.startswith("in_service"))
    return p50, p99


def _when_in_service(worker: Worker, n_warm: int, path: str) -> None:
    """Create ``path`` once ``worker`` has read the warm-up, every sensor has its baseline and no fine-tune waits;
    give up when the paced producer does (it would poll the next runs' GIL for nothing)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        if _in_service(worker, n_warm):
            Path(path).touch()
            return
        time.sleep(0.1)


def _in_service(worker: Worker, n_warm: int) -> bool:
    """Whether ``worker`` has read the ``n_warm`` warm-up records, every sensor has its baseline, no fine-tune
    waits and the baselines are written to their changelog."""
    b = worker.baselines
    return worker.totals.records >= n_warm and (b is None or (len(b.ready) >= N_SENSORS and not b.background_waiting
                                                               and not worker.state_pending))


def _paced(bootstrap: str, topic: str, rate: float, seconds: float, n_anomalous: int, settled: str = "") -> None:
    """The paced stream, from its own process: sharing the consumer's GIL would add its own delay to every reading.
    With ``settled``, the timed phase waits (at most ``SETTLE_TIMEOUT_S``) for that file."""
    subprocess.run(_paced_argv(bootstrap, topic, rate, seconds, _n_warmup(rate), n_anomalous, settled), check=True)


def _paced_argv(bootstrap: str, topic: str, rate: float, seconds: float, n_warm: int, n_anomalous: int,
                settled: str = "") -> list[str]:
    """The command line of the paced producer (:data:`_PACED_PRODUCER`)."""
    return [sys.executable, "-c", _PACED_PRODUCER, bootstrap, topic, str(rate), str(seconds), str(n_warm),
            str(n_anomalous), settled, str(SETTLE_TIMEOUT_S)]


def _event_latency(bootstrap: str, topic: str, output: str, n_warm: int,
                   info: dict[str, Any]) -> tuple[float, float, int]:
    """p50/p99 of each input record's produce time (by partition/offset) to the produce time of the event of the
    window it closed, over the events of the records past the warm-up; and how many events those are."""
    produced: dict[tuple[int, int], int] = {}
    emitted: list[tuple[int, int, int]] = []
    c = KafkaConsumer(bootstrap_servers=[bootstrap], enable_auto_commit=False)
    for t in (topic, output):
        tps = [TopicPartition(t, p) for p in sorted(c.partitions_for_topic(t))]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        idle = time.monotonic()
        while time.monotonic() - idle < 2.0:
            for msgs in c.poll(timeout_ms=300).values():
                idle = time.monotonic()
                for m in msgs:
                    if t == topic:
                        produced[(m.partition, m.offset)] = m.timestamp
                    else:
                        src = json.loads(m.value)["source"]
                        emitted.append((src["partition"], src["offset"], m.timestamp))
    c.close()
    lat = [ts - produced[(p, o)] for p, o, ts in emitted if (p, o) in produced and o >= n_warm]
    print(json.dumps({"latency_run": {**info, "produced": len(produced), "events": len(emitted),
                                      "timed_events": len(lat)}}), flush=True)
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), len(lat)


def _peer_args(bootstrap: str, topic: str, output: str, model_dir: str, group: str, state_dir: Path,
               stride: int) -> list[str]:
    return [sys.executable, str(ROOT / "benchmarks/peer_quix.py"), "--bootstrap", bootstrap, "--input", topic,
            "--output", output, "--model-dir", model_dir, "--group", group, "--state-dir", str(state_dir),
            "--stride", str(stride)]


def _peer(args: list[str], n_messages: int, per_message: int) -> float:
    """The peer's readings/s over the first ``n_messages`` of its topic (it times itself from its first)."""
    out = subprocess.run([*args, "--messages", str(n_messages), "--readings-per-message", str(per_message)],
                         check=True, capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["readings_per_s"])


def _peer_latency(args: list[str], bootstrap: str, topic: str, output: str, group: str, rate: float,
                  seconds: float, n_anomalous: int) -> tuple[float, float, int]:
    """:func:`_latency` of the peer: the paced stream starts once its consumer group is stable with a member."""
    from confluent_kafka.admin import AdminClient

    _wait_for_partitions(bootstrap, topic)
    peer = subprocess.Popen([*args, "--idle-s", "5"])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        g = admin.describe_consumer_groups([group])[group].result(10)
        if str(g.state).endswith("STABLE") and g.members and g.members[0].assignment.topic_partitions:
            break
        time.sleep(0.2)
    time.sleep(1.0)
    _paced(bootstrap, topic, rate, seconds, n_anomalous)
    peer.wait(120)
    return _event_latency(bootstrap, topic, output, _n_warmup(rate), {"peer": "quixstreams"})


LATENCY_ANOMALOUS_SENSORS = 2  # of 50: their windows are the timed events (~4 % of the windows)


def _fresh_topic(base: Config, bootstrap: str, name: str) -> str:
    """Create ``bench-<name>`` with one partition; returns its name."""
    topic = f"bench-{name}"
    ensure_topics(base.replace(kafka={"bootstrap_servers": (bootstrap,)}).kafka, {topic: 1})
    return topic


_RSS_PROBE = """
import resource, sys
from aestream.stream.windows import Windower
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
n, w = int(sys.argv[1]), int(sys.argv[2])
names = [f"sensor-{i:06d}" for i in range(n)]
win = Windower(w, 4, 4, 10_000)
win.push("warm-up", 1_767_225_600_000, (1.0, 2.0, 3.0, 4.0))
before = rss()
for s in names:
    win.push(s, 1_767_225_600_000, (1.0, 2.0, 3.0, 4.0))
print((rss() - before) / n)
"""


def _rss_per_sensor(window_size: int) -> dict[str, float]:
    """RSS growth per idle sensor, in a fresh interpreter per count, minus the window buffer's own bytes."""
    buffer = 2 * window_size * len(CHANNELS) * 4 + 2 * window_size * 8
    out = {}
    for n in (1_000, 10_000, 100_000):
        proc = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(n), str(window_size)], check=True,
                              capture_output=True, text=True, cwd=ROOT)
        out[str(n)] = float(proc.stdout) - buffer
    return out


_RSS_WORKER_PROBE = """
import gc, itertools, json, logging, resource, sys
import msgspec, numpy as np
from aestream.app import build_app
from aestream.config import Config
from aestream.models.store import ModelStore
from aestream.stream.messages import Record
logging.disable(logging.WARNING)  # the count stride's phases of ~10^4 sensors a partition fit no commit: said once each
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
n, w, model_dir, state_dir, stages = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "on"
channels = tuple(sys.argv[6].split(","))
cfg = Config().replace(
    stream={"channels": channels, "window_size": w, "stride": 4}, baselines={"mode": "off"},
    retrain={"enabled": stages}, alerts={"enabled": stages, "persist_interval_s": 1e9},
    paths={"model_dir": model_dir, "state_dir": state_dir}, ops={"metrics_enabled": False},
    model={"device": "cpu", "torch_threads": 1})
bundle = ModelStore(model_dir).load()
bundle.threshold = 1e9  # every window normal: each sensor's first one is its pending reservoir sample
class Models:
    def current(self): return bundle.version
    def load(self, version=None, device="cpu"): return bundle
class Source:
    pending = iter(())
    def poll(self, timeout_ms=None, max_records=None): return list(itertools.islice(self.pending, 2000))
    def commit(self, offsets, metadata=None): return True
    def close(self): pass
class Sink:
    def send(self, msg): pass
    def flush(self, timeout_s=60.0): pass
    def close(self, timeout_s=10.0): pass
ts = (1_767_225_600_000 + 1000 * np.arange(w)).tolist()
values = np.round(np.random.default_rng(0).normal(50, 5, (w, len(channels))), 3).tolist()
source = Source()
app = build_app(cfg, source=source, sink=Sink(), models=Models())
worker = app.worker
worker.refresh_model(force=True)
def feed(prefix, k):  # one columnar message of w readings per sensor: one window each
    source.pending = (Record("in", i % 8, i, f"{prefix}-{i:06d}".encode(),
                             msgspec.json.encode({"sensor": f"{prefix}-{i:06d}", "ts": ts, "values": values}), 0)
                      for i in range(k))
    while worker.step().records:
        pass
feed("warm-up", 2000)
gc.collect()
before = rss()
feed("sensor", n)
gc.collect()
grown = rss() - before
assert len(worker.windows) == n + 2000 and worker.totals.windows == n + 2000
if stages:
    reservoir = next(s for s in worker.stages if type(s).__name__ == "ReservoirStage")
    alerts = next(s for s in worker.stages if type(s).__name__ == "AlertStage")
    assert reservoir.n_pending == n + 2000 and len(alerts.tracker.snapshot()) == n + 2000
print(json.dumps({"bytes_per_sensor": grown / n}))
"""


def _rss_per_sensor_worker(window_size: int, model_dir: str, state_dir: Path, stages: bool) -> dict[str, float]:
    """RSS growth per idle sensor of a whole worker (``build_app``; fake source, sink and model source, baselines
    off) that has scored one window of each sensor, in a fresh interpreter per count, minus the window buffer's
    own bytes. ``stages``: retraining (the worker's reservoir, shipped settings) and alerts (shipped settings;
    the state kept in memory, as with the changelog of ``aestream run``) on."""
    buffer = 2 * window_size * len(CHANNELS) * 4 + 2 * window_size * 8
    out = {}
    for n in (10_000, 100_000):
        state = state_dir / f"rss-{'on' if stages else 'off'}-{n}"
        proc = subprocess.run([sys.executable, "-c", _RSS_WORKER_PROBE, str(n), str(window_size), model_dir,
                               str(state), "on" if stages else "off", ",".join(CHANNELS)],
                              check=True, capture_output=True, text=True, cwd=ROOT)
        out[str(n)] = json.loads(proc.stdout.strip().splitlines()[-1])["bytes_per_sensor"] - buffer
    return out


class _MemorySource:
    """Records from a list, 2,000 a poll (the shipped ``max_poll_records``); nothing to commit to."""

    def __init__(self) -> None:
        self.pending: Any = iter(())

    def poll(self, timeout_ms: int | None = None, max_records: int | None = None) -> list[Record]:
        return list(itertools.islice(self.pending, 2000))

    def commit(self, offsets: Any, metadata: Any = None) -> bool:
        return True

    def close(self) -> None:
        pass

    def assignment(self) -> set[Any]:  # what the metrics observer reads each step
        return set()

    def lag(self) -> dict[Any, int]:
        return {}


class _NullSink:
    """Takes every message and sends none (the event path up to the client's ``send``)."""

    def send(self, msg: Any) -> None:
        pass

    def flush(self, timeout_s: float = 60.0) -> None:
        pass

    def close(self, timeout_s: float = 10.0) -> None:
        pass


def _event_path(base: Config, state_dir: Path, rounds: int = 6, readings: int = 40_000) -> dict[str, Any]:
    """Readings/s of a whole worker in process (no Kafka) on the plant's single readings, every sensor in service
    (its first 1,000 readings read: calibrated and fine-tuned; its metrics fed), when no window emits and when every
    window does (each sensor's threshold scaled to ~0, as in the every-window latency runs). The two take turns,
    ``rounds`` times, each on the plant's next ``readings``; medians of the rounds, timed by this thread's CPU time
    (``time.thread_time``: the worker's steps run on it, torch on one thread), so other processes on the machine
    cost it little. The difference per event is what building, encoding and handing over one event costs."""
    msgs = _encode(_plant_readings(IN_SERVICE_WARMUP + 2 * rounds * readings), 1, False)
    runs: dict[str, tuple[Worker, _MemorySource]] = {}
    for name, factors in (("none", {}), ("every", {"*": 1e-12})):
        source = _MemorySource()
        cfg = base.replace(threshold={"sensors": factors}, ops={"metrics_enabled": False},
                           paths={"state_dir": str(state_dir / f"events-{name}")})
        # the worker's Prometheus metrics fed as shipped (``kafka`` sources get them; served by none here)
        worker = build_app(cfg, source=source, sink=_NullSink(), observers=(WorkerMetrics(Metrics(), source),)).worker
        worker.refresh_model(force=True)
        runs[name] = worker, source
    gc.freeze()  # as Worker.run does before its first poll

    def feed(name: str, start: int, stop: int) -> None:
        worker, source = runs[name]
        source.pending = (Record("in", 0, i, k, v, -1) for i, (k, v) in enumerate(msgs[start:stop], start))
        while worker.step().records or (worker.baselines is not None and worker.baselines.background_waiting):
            pass

    for name in runs:
        feed(name, 0, IN_SERVICE_WARMUP)
    rps: dict[str, list[float]] = {name: [] for name in runs}
    events_per_reading = 0.0
    start = IN_SERVICE_WARMUP
    for r in range(rounds):
        for name in ("none", "every") if r % 2 == 0 else ("every", "none"):
            worker = runs[name][0]
            first, events, t0 = worker.totals.readings, worker.totals.events, time.thread_time()
            feed(name, start, start + readings)
            seconds = time.thread_time() - t0
            rps[name].append((worker.totals.readings - first) / seconds)
            if name == "every":
                events_per_reading = (worker.totals.events - events) / (worker.totals.readings - first)
            start += readings
    for worker, _ in runs.values():
        worker.close()
    gc.unfreeze()
    none, every = float(np.median(rps["none"])), float(np.median(rps["every"]))
    return {"none_rps": round(none), "every_rps": round(every), "every_over_none": round(every / none, 3),
            "events_per_reading": round(events_per_reading, 3),
            "us_per_event": round((1 / every - 1 / none) / events_per_reading * 1e6, 1),
            "none_runs": [round(x) for x in rps["none"]], "every_runs": [round(x) for x in rps["every"]]}


def _scoring(window_size: int) -> dict[str, dict[str, float]]:
    """Windows/s of each family's ``Scorer.score`` on one CPU thread, and on CUDA when there is one: there also at
    1,024 windows a call on both devices, since at 256 a call's fixed cost hides what the GPU does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cuda = torch.cuda.is_available()
    try:
        cpu = scorers(window_size, "cpu")
        out = {"cpu": rates(cpu)}
        if cuda:
            out["cpu_1024"] = rates(cpu, batch=1024)
    finally:
        torch.set_num_threads(threads)
    if cuda:
        gpu = scorers(window_size, "cuda")
        out["cuda"] = rates(gpu)
        out["cuda_1024"] = rates(gpu, batch=1024)
    return out


def _get(result: dict[str, Any], *keys: str) -> Any:
    """``result[k1][k2]…``, or NaN when a part was skipped."""
    for key in keys:
        if key not in result:
            return float("nan")
        result = result[key]
    return result


def _peer_summary(result: dict[str, Any], latency: dict[str, dict[str, float]]) -> dict[str, Any] | None:
    """The peer's readings/s and aestream / peer per message form and client; latencies at the peer's 20 % rate."""
    if "peer" not in result.get("single", {}):
        return None
    import quixstreams

    out: dict[str, Any] = {"name": "quixstreams", "version": quixstreams.__version__}
    for label in ("single", "batched", "columnar"):
        out[f"{label}_rps"] = result[label]["peer"]["pipeline_rps"]
        out[f"{label}_vs_peer"] = result[label]["kafka-python"]["vs_peer"]
        out[f"confluent_{label}_vs_peer"] = result[label]["confluent"]["vs_peer"]
    if "peer" in latency:  # the peer at 20 % of its capacity, and aestream at the same rate
        out["latency"] = latency["peer"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default=None, help="use this broker instead of starting one")
    ap.add_argument("--readings", type=int, default=200_000, help="readings per throughput run (default 200k)")
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--latency-rounds", type=int, default=3,
                    help="rounds of the bare consumer and the every-window latency runs, per client")
    ap.add_argument("--peer-latency-seconds", type=float, default=60.0,
                    help="the timed phase at the peer's load: the peer, and aestream on each client (default 60)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="pipeline runs per client (starting and in service), between ceiling runs")
    ap.add_argument("--skip", default="", help="comma-separated parts to leave out: throughput (and with it "
                    "latency and peer), latency, memory, scoring, events, peer")
    ap.add_argument("--peer-readings", type=int, default=20_000, help="readings the peer processes per run")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill, too, stops the broker and removes the folder
    tmp = Path(tempfile.mkdtemp(prefix="aestream-bench-"))
    skip = set(args.skip.split(",")) - {""}
    if "throughput" in skip:  # latency runs at a share of the measured capacity; the peer is measured beside it
        skip |= {"latency", "peer"}
    started = args.bootstrap is None and "throughput" not in skip
    bootstrap = args.bootstrap
    broker = faultkit.Broker(tmp / "kafka")  # a private broker on a port it draws (the tests' own helper)
    try:  # from the broker's start: one that fails or is killed halfway is stopped and its folder removed too
        if started:
            broker.start()
            bootstrap = broker.bootstrap
        run = uuid.uuid4().hex[:8]
        base = Config().replace(stream={"channels": CHANNELS, "window_size": 32, "stride": 4},
                                model={"family": "vanilla", "epochs": 5, "device": "cpu", "torch_threads": 1,
                                       "detrend_channels": ()},  # the shipped ones are SKAB's, not these
                                paths={"model_dir": str(tmp / "models")},
                                ops={"metrics_port": 0})  # served, as in service, on a free port
        bundle = train_bundle(list(Plant(N_SENSORS, CHANNELS, seed=1).signal(300)), base.stream, base.model,
                              base.threshold)
        ModelStore(base.paths.model_dir).publish(bundle)
        result: dict[str, Any] = {}
        cuda = torch.cuda.is_available()
        for label, batch in () if "throughput" in skip else (("single", 1), ("batched", BATCH), ("columnar", BATCH)):
            topic = f"bench-{label}-{run}"
            msgs = _messages(args.readings, batch, columnar=label == "columnar")
            # the shipped max_poll_records, as a user runs it
            kafka: dict[str, Any] = {"bootstrap_servers": (bootstrap,), "input_topics": (topic,),
                                     "output_topic": f"bench-out-{label}-{run}"}
            peer_output = f"{kafka['output_topic']}-peer"
            ensure_topics(base.replace(kafka=kafka).kafka, {topic: 1, kafka["output_topic"]: 1, peer_output: 1})
            _produce(bootstrap, topic, msgs)
            # rounds of ceiling → pipelines → ceiling: each pipeline run is compared with the mean of the two
            # ceiling runs around it, so a shared machine's drift cancels; the figures are medians over rounds
            ceilings = [_ceiling(bootstrap, topic, len(msgs))]
            stricts = [_ceiling(bootstrap, topic, len(msgs), strict=True)]
            runs: dict[str, list[tuple[float, int]]] = {"kafka-python": [], "confluent": []}
            peers: list[float] = []
            n_peer = min(len(msgs), max(1, args.peer_readings // batch))
            # in service: the same readings, read after each sensor's calibration and fine-tune (kafka-python, then
            # with its fetch process, and confluent), in each round: a single run swung from 0.73 to 1.28× here
            plant_run = _plant_readings(IN_SERVICE_WARMUP + args.readings)
            warm = _encode(plant_run[:IN_SERVICE_WARMUP], batch, label == "columnar")
            later = _encode(plant_run[IN_SERVICE_WARMUP:], batch, label == "columnar")
            services = (("kafka-python", False, ""), ("confluent", False, ""), ("kafka-python", True, "fetch_process_"))
            in_service: dict[tuple[str, str], list[tuple[float, int]]] = {(c, k): [] for c, _, k in services}
            for r in range(args.rounds):
                for client in runs:
                    cfg = base.replace(kafka={**kafka, "client": client,
                                              "group_id": f"bench-{label}-{client}-{r}-{run}"})
                    rps, worker = _worker(cfg, len(msgs))
                    runs[client].append((rps, worker.totals.events))
                if "peer" not in skip:
                    group = f"bench-peer-{label}-{r}-{run}"
                    peers.append(_peer(_peer_args(bootstrap, topic, peer_output, base.paths.model_dir, group,
                                                  tmp / group, base.stream.stride), n_peer, batch))
                for client, fetch, key in services:
                    tag = f"{label}-service-{client}{'-fetch' if fetch else ''}-{r}-{run}"
                    ensure_topics(base.replace(kafka=kafka).kafka, {f"bench-{tag}": 1})
                    cfg = base.replace(kafka={**kafka, "client": client, "input_topics": (f"bench-{tag}",),
                                              "group_id": f"bench-{tag}", "fetch_process": fetch})
                    in_service[client, key].append(_worker_in_service(cfg, warm, later))
                ceilings.append(_ceiling(bootstrap, topic, len(msgs)))
                stricts.append(_ceiling(bootstrap, topic, len(msgs), strict=True))
            row: dict[str, Any] = {"messages": len(msgs), "ceiling_rps": round(float(np.median(ceilings))),
                                   "ceiling_runs": [round(c) for c in ceilings],
                                   "strict_ceiling_rps": round(float(np.median(stricts)))}
            for client, got in runs.items():
                ratios, strict = _round_ratios(got, ceilings), _round_ratios(got, stricts)
                row[client] = {"pipeline_rps": round(float(np.median([g[0] for g in got]))),
                               "ratio": round(float(np.median(ratios)), 3),
                               "ratio_runs": [round(x, 3) for x in ratios],
                               "strict_ratio": round(float(np.median(strict)), 3), "events": got[-1][1]}
                if peers:  # each round's aestream run against the peer's run of the same round
                    row[client]["vs_peer"] = round(float(np.median([g[0] / p for g, p in zip(got, peers)])), 2)
            if peers:
                row["peer"] = {"pipeline_rps": round(float(np.median(peers))), "runs": [round(p) for p in peers],
                               "readings": n_peer * batch}
            for (client, key), got in in_service.items():
                ratios = _round_ratios(got, ceilings)
                row[client].update({f"{key}in_service_rps": round(float(np.median([g[0] for g in got]))),
                                    f"{key}in_service_ratio": round(float(np.median(ratios)), 3),
                                    f"{key}in_service_ratio_runs": [round(x, 3) for x in ratios],
                                    f"{key}in_service_timed_readings": min(g[1] for g in got)})
            if cuda:  # the pipeline scoring on the GPU (one run, kafka-python)
                cfg = base.replace(kafka={**kafka, "group_id": f"bench-{label}-cuda-{run}"}, model={"device": "cuda"})
                row["cuda_pipeline_rps"] = round(_worker(cfg, len(msgs))[0])
            result[label] = row
            print(json.dumps({label: row}), flush=True)
        latency: dict[str, dict[str, Any]] = {}
        if "latency" not in skip:
            # two model stores: the calibrated threshold (only the shifted sensors' windows emit, as in service)
            # and a zero threshold (every window emits: the event path at its heaviest)
            every = ModelStore(base.paths.model_dir).load()
            every.threshold = 1e-9
            ModelStore(str(tmp / "models-every")).publish(every)
            for client in ("kafka-python", "confluent"):  # each at 20 % of its own measured capacity
                rate = 0.2 * result["single"][client]["pipeline_rps"]
                # 2 sensors shifted, the calibrated thresholds: once
                p50, p99 = _latency_of(base, bootstrap, client, rate, args.latency_seconds, "", base.paths.model_dir,
                                       LATENCY_ANOMALOUS_SENSORS, f"{client}-{run}")
                row = {"rate_rps": round(rate), "p50_ms": round(p50, 1), "p99_ms": round(p99, 1)}
                # every window emits: in rounds of the bare consumer, a fleet starting and one in service
                modes = ("every_window_", "in_service_every_window_")
                runs_of: dict[str, list[tuple[float, float]]] = {m: [] for m in ("transport_", *modes)}
                for r in range(args.latency_rounds):
                    runs_of["transport_"].append(_transport_latency(
                        bootstrap, _fresh_topic(base, bootstrap, f"bare-{client}-{r}-{run}"), rate,
                        args.latency_seconds, client))
                    for mode in modes:
                        runs_of[mode].append(_latency_of(base, bootstrap, client, rate, args.latency_seconds, mode,
                                                         str(tmp / "models-every"), 0, f"{client}-{mode}{r}-{run}"))
                for mode, timed in runs_of.items():
                    row.update({f"{mode}p50_ms": round(float(np.median([t[0] for t in timed])), 1),
                                f"{mode}p99_ms": round(float(np.median([t[1] for t in timed])), 1),
                                f"{mode}p99_runs": [round(t[1], 1) for t in timed]})
                    if mode != "transport_":  # the yardstick: each p99 against its round's bare consumer's
                        ratios = [t[1] / bare[1] for t, bare in zip(timed, runs_of["transport_"])]
                        row[f"{mode}p99_over_transport"] = round(float(np.median(ratios)), 2)
                        row[f"{mode}p99_over_transport_runs"] = [round(x, 2) for x in ratios]
                latency[client] = row
                print(json.dumps({"latency": {client: row}}), flush=True)
            if "peer" in result["single"]:  # the peer at 20 % of its own capacity
                # its load times few events (2 sensors' windows at ~455 readings/s: ~45 in 10 s, a p99 that is
                # their largest), so these runs last --peer-latency-seconds
                rate, seconds = 0.2 * _get(result, "single", "peer", "pipeline_rps"), args.peer_latency_seconds
                tag = f"peer-{run}"
                topic = _fresh_topic(base, bootstrap, f"lat-{tag}")
                output = _fresh_topic(base, bootstrap, f"lat-out-{tag}")
                p50, p99, n = _peer_latency(_peer_args(bootstrap, topic, output, base.paths.model_dir,
                                                       f"bench-lat-{tag}", tmp / f"lat-{tag}", base.stream.stride),
                                            bootstrap, topic, output, f"bench-lat-{tag}", rate, seconds,
                                            LATENCY_ANOMALOUS_SENSORS)
                latency["peer"] = {"rate_rps": round(rate), "seconds": seconds, "p50_ms": round(p50, 1),
                                   "p99_ms": round(p99, 1), "timed_events": n}
                for client in ("kafka-python", "confluent"):  # aestream at the peer's rate: the same load
                    tag = f"at-peer-{client}-{run}"
                    cfg = base.replace(kafka={"bootstrap_servers": (bootstrap,),
                                              "input_topics": (_fresh_topic(base, bootstrap, f"lat-{tag}"),),
                                              "output_topic": _fresh_topic(base, bootstrap, f"lat-out-{tag}"),
                                              "group_id": f"bench-lat-{tag}", "client": client})
                    p50, p99, n = _latency(cfg, rate, seconds, LATENCY_ANOMALOUS_SENSORS)
                    # and the client's bare consumer at that load: the tail the client itself brings
                    _, t99 = _transport_latency(bootstrap, _fresh_topic(base, bootstrap, f"bare-{tag}"), rate,
                                                seconds, client)
                    latency["peer"].update({f"{client}_p50_ms": round(p50, 1), f"{client}_p99_ms": round(p99, 1),
                                            f"{client}_timed_events": n, f"{client}_transport_p99_ms": round(t99, 1)})
                print(json.dumps({"latency": {"peer": latency["peer"]}}), flush=True)
        nan = {"rate_rps": float("nan"), "p50_ms": float("nan"), "p99_ms": float("nan")}
        rss = _rss_per_sensor(32) if "memory" not in skip else {"100000": float("nan")}
        rss_worker = rss_stages = {"10000": float("nan"), "100000": float("nan")}
        if "memory" not in skip:
            rss_worker = _rss_per_sensor_worker(32, base.paths.model_dir, tmp, stages=False)
            rss_stages = _rss_per_sensor_worker(32, base.paths.model_dir, tmp, stages=True)
            print(json.dumps({"memory": {"window_buffers": rss, "worker": rss_worker,
                                         "worker_retrain_alerts": rss_stages}}), flush=True)
        scoring = _scoring(32) if "scoring" not in skip else {}
        events = _event_path(base, tmp) if "events" not in skip else None
        if events is not None:
            print(json.dumps({"event_path": events}), flush=True)
        summary = {
            "ceiling_rps": _get(result, "single", "ceiling_rps"),
            "pipeline_rps": _get(result, "single", "kafka-python", "pipeline_rps"),
            "ratio": _get(result, "single", "kafka-python", "ratio"),
            "strict_ceiling_rps": _get(result, "single", "strict_ceiling_rps"),
            "strict_ratio": _get(result, "single", "kafka-python", "strict_ratio"),
            "confluent_pipeline_rps": _get(result, "single", "confluent", "pipeline_rps"),
            "confluent_ratio": _get(result, "single", "confluent", "ratio"),
            "batched_ceiling_rps": _get(result, "batched", "ceiling_rps"),
            "batched_rps": _get(result, "batched", "kafka-python", "pipeline_rps"),
            "confluent_batched_rps": _get(result, "batched", "confluent", "pipeline_rps"),
            "columnar_ceiling_rps": _get(result, "columnar", "ceiling_rps"),
            "columnar_rps": _get(result, "columnar", "kafka-python", "pipeline_rps"),
            "confluent_columnar_rps": _get(result, "columnar", "confluent", "pipeline_rps"),
            "in_service": {label: {client: {k: _get(result, label, client, k) for k in ("in_service_rps",
                                                                                      "in_service_ratio")}
                                   for client in ("kafka-python", "confluent")} for label in result},
            "fetch_process_in_service_ratio": {label: _get(result, label, "kafka-python",
                                                           "fetch_process_in_service_ratio") for label in result},
            "latency_rate_rps": latency.get("kafka-python", nan)["rate_rps"],
            "p50_ms": latency.get("kafka-python", nan)["p50_ms"],
            "p99_ms": latency.get("kafka-python", nan)["p99_ms"],
            "every_window_p99_ms": latency.get("kafka-python", nan).get("every_window_p99_ms", float("nan")),
            "in_service_every_window_p99_ms": latency.get("kafka-python", nan).get("in_service_every_window_p99_ms",
                                                                                    float("nan")),
            "latency": latency,
            "rss_bytes_per_sensor": round(rss["100000"], 1),
            "rss_bytes_per_sensor_by_count": {k: round(v, 1) for k, v in rss.items()},
            "rss_bytes_per_sensor_worker": {k: round(v, 1) for k, v in rss_worker.items()},
            "rss_bytes_per_sensor_retrain_alerts": {k: round(v, 1) for k, v in rss_stages.items()},
            "scoring_windows_per_s": {k: round(v) for k, v in scoring.get("cpu", {}).items()},
            "event_path": events,
            "cuda_scoring_windows_per_s": {k: round(v) for k, v in scoring.get("cuda", {}).items()} or None,
            "batch_1024_scoring_windows_per_s": {device: {k: round(v) for k, v in scoring[f"{device}_1024"].items()}
                                                 for device in ("cpu", "cuda")} if "cuda_1024" in scoring else None,
            "cuda_pipeline_rps": {label: result[label]["cuda_pipeline_rps"] for label in result} if cuda else None,
            "peer": _peer_summary(result, latency),
            "kafka_python_crc32c_in_c": crc32c_c is not None,
            "cpu_threads": torch.get_num_threads(),
            "python": sys.version.split()[0],
        }
        print(json.dumps(summary))
    finally:
        if started:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # the broker's log and the models: ~600 MB a run


if __name__ == "__main__":
    main()
