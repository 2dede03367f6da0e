"""Fault-injection harness shared by ``tests/faults/`` and ``benchmarks/soak.py`` (test code, not the package).

* :class:`Broker` — a private single-node broker (``deploy/kafka/kafka.sh``) that can be stopped and started
  again *with its data* (``kafka.sh start`` formats a fresh log dir, so :meth:`Broker.restart` relaunches the
  JVM on the same directory itself).
* :class:`WorkerProc` — ``python -m aestream --config <toml> run`` as a real subprocess, so it can be
  ``kill -9``-ed; reports its peak RSS from ``/proc``.
* :func:`plant_stream` — a simulated plant's readings as Kafka messages, with the windows every sensor must
  produce and the injected anomalies.
* :class:`Producer` — publishes messages at a fixed rate from a thread ("under load").
* :func:`audit` — the no-loss verdict: committed offsets vs end offsets, expected windows vs events, one id per
  window, injected anomalies detected.
* :func:`alert_audit` — the alert episodes against the anomaly events: none opened twice, none lost.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from aestream.commands.simulate import Injected, Plant
from aestream.config import Config
from aestream.stream.codec import encode_reading

ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"
START_MS = 1_767_225_600_000
CHANNELS = ("temperature", "pressure", "vibration", "current")


def free_port() -> int:
    """A free port whose neighbour (the controller's port) is free too, below the kernel's ephemeral range: a port
    from that range (what ``bind(0)`` hands out) can become another process's outgoing connection's local port
    before the broker binds it, and the broker then exits with "Address already in use"."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default start (macOS's range starts at 49152)
    draw = random.Random()  # seeded from the OS: two pytest workers draw apart whatever a test seeds
    for _ in range(200):
        port = draw.randrange(10_000, max(low - 1, 10_001))
        try:
            for p in (port, port + 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no free port pair found in 10000-{low - 1}")


def wait_until(pred: Callable[[], bool], timeout_s: float, every_s: float = 0.2, what: str = "condition",
               explain: Callable[[], str] | None = None) -> float:
    """Until ``pred()``; returns the seconds it took. On timeout the error says ``what`` and, if given,
    ``explain()`` (who stalled)."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"{what} not reached within {timeout_s} s" + (f"\n{explain()}" if explain else ""))
        time.sleep(every_s)
    return time.monotonic() - t0


def log_without_reconnects(text: str) -> str:
    """A worker's log without kafka-python's lines about a broker that is away (hundreds during an outage)."""
    noise = ("ECONNREFUSED", "No node available", "socket disconnected", "Connection lost")
    return "\n".join(line for line in text.splitlines() if not any(n in line for n in noise))


def answers(port: int) -> bool:
    """Whether something accepts a connection on 127.0.0.1:``port`` (a broker's listener is open)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def foreign_tracebacks(text: str) -> list[str]:
    """The tracebacks in a worker's log but those kafka-python attaches to its own records (it logs a connection
    that a stopping broker resets, ``ConnectionResetError`` and all, as an error of ``kafka.net.transport``): a
    traceback right under a record of a ``kafka.`` logger is that record's."""
    found, before = [], ""  # the logger of the line before, if that line was a record
    for line in text.splitlines():
        if line.startswith("Traceback (most recent call last):") and not before.startswith("kafka."):
            found.append(f"under {before or 'no record'}: {line}")
        record = re.match(r"\d\d:\d\d:\d\d [A-Z]+ (\S+): ", line)
        before = record[1] if record else ""
    return found


# -- the broker -------------------------------------------------------------------------------------------------
class Broker:
    """A private broker on ``port`` with its data in ``workdir`` (never the session broker)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self._chosen = port is None  # a port of our choosing may be replaced by another
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None  # the JVM started by restart()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, tries: int = 3) -> None:
        """Format and start a fresh broker. If another process takes a port of our choosing first (``kafka.sh``
        then fails at once, saying so), another port is drawn, up to ``tries`` times."""
        for attempt in range(1, tries + 1):
            done = subprocess.run(["bash", str(KAFKA_SH), "start", str(self.port), str(self.workdir)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            sys.stderr.write(done.stderr)
            if done.returncode == 0:
                return
            taken = "Address already in use" in done.stderr or "is taken" in done.stderr
            if not (taken and self._chosen and attempt < tries):
                raise subprocess.CalledProcessError(done.returncode, done.args, stderr=done.stderr)
            self.port = free_port()

    def stop(self) -> None:
        """Stop it cleanly (SIGTERM, then SIGKILL after 30 s) — its data stays."""
        if self._proc is not None:  # our child since restart(): kafka.sh would wait on its zombie for 30 s
            self._proc.terminate()
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(30)
            self._proc = None
            (self.workdir / "kafka.pid").unlink(missing_ok=True)
            return
        subprocess.run(["bash", str(KAFKA_SH), "stop", str(self.workdir)], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def restart(self, timeout_s: float = 90.0) -> None:
        """Start the JVM again on the same data directory (what ``kafka.sh start`` does, minus the format)."""
        here = KAFKA_SH.parent
        cmd = ["java", "-Xms256m", "-Xmx768m", "-XX:+UseG1GC",
               f"-Dlog4j2.configurationFile={here / 'log4j2.properties'}", "-Djava.awt.headless=true",
               "-cp", str(here / "lib" / "*"), "kafka.Kafka", str(self.workdir / "server.properties")]
        with open(self.workdir / "server.log", "ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        (self.workdir / "kafka.pid").write_text(f"{self._proc.pid}\n")
        wait_until(lambda: answers(self.port), timeout_s, what=f"broker on {self.bootstrap}")


# -- the worker subprocess --------------------------------------------------------------------------------------
def write_config(cfg: Config, path: Path) -> Path:
    """The whole of ``cfg`` as a TOML file (secrets left out), with the metrics endpoint on a free port (several
    workers share this machine)."""
    ops = {"metrics_port": 0, "trainer_metrics_port": 0, "metrics_host": "127.0.0.1"}
    path.write_text(cfg.replace(ops=ops).to_toml())
    return path


class WorkerProc:
    """``aestream run`` as a subprocess (its own session, so a kill reaches it alone)."""

    def __init__(self, config_path: Path, log_path: Path, env: dict[str, str] | None = None,
                 args: Iterable[str] = ()) -> None:
        self.log_path = log_path
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aestream", "--config", str(config_path), "run", "--device", "cpu", *args],
            cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.peak_rss_bytes = 0

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def sample_rss(self) -> int:
        """Record the process's peak RSS so far (VmHWM) and return it."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_bytes = max(self.peak_rss_bytes, int(line.split()[1]) * 1024)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
        return self.peak_rss_bytes

    def kill9(self) -> None:
        self.sample_rss()
        if self.alive:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._log.close()

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (drain, flush, commit, exit) and the exit code."""
        self.sample_rss()
        if self.alive:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


# -- data -------------------------------------------------------------------------------------------------------
@dataclass
class PlantStream:
    messages: list[tuple[bytes, bytes]]
    expected_windows: set[tuple[str, int]]  # the window ends of one uninterrupted run
    injected: list[Injected]
    window_ms: int
    readings: set[tuple[str, int]]  # every (sensor, ts) sent up to the last window end (later ones: no window yet)
    period_ms: int


def plant_stream(cfg: Config, n_sensors: int, steps: int, n_anomalies: int, seed: int = 0,
                 length: int = 60) -> PlantStream:
    """``steps`` readings of the plant :func:`trained_bundle` learnt (``n_sensors`` sensors, seed 0), after its
    training stretch, with ``n_anomalies`` shift anomalies placed by ``seed`` over the stream."""
    plant = Plant(n_sensors, cfg.stream.channels, seed=0)
    plant.signal(800)  # the training draw of trained_bundle
    rnd = random.Random(seed)
    values = plant.signal(steps, step0=800)
    injected: list[Injected] = []
    if n_anomalies:
        span = (steps - 100) // n_anomalies
        for i in range(n_anomalies):
            start = 800 + 50 + i * span + rnd.randrange(0, max(span - length - 10, 1))
            sensor = rnd.randrange(n_sensors)
            # three stacked shifts: a fault the small test model sees clearly (one is within its noise on
            # low-gain channels)
            injected.append(plant.inject(values, sensor, "shift", start, length, START_MS, step0=800))
            for _ in range(2):
                plant.inject(values, sensor, "shift", start, length, START_MS, step0=800)
    readings = [(s, START_MS + (800 + step) * plant.period_ms, [round(float(v), 5) for v in values[i, step]])
                for step in range(steps) for i, s in enumerate(plant.sensors)]
    w, stride, grid = cfg.stream.window_size, cfg.stream.stride, cfg.stream.stride_ms
    ts_of = [START_MS + (800 + step) * plant.period_ms for step in range(steps)]
    if grid:  # the first full window, then the first reading of each new stride_ms cell of the epoch grid
        ends = [t for step, t in enumerate(ts_of)
                if step == w - 1 or (step >= w and t // grid != (t - plant.period_ms) // grid)]
    else:
        ends = ts_of[w - 1 :: stride]
    expected = {(s, t) for s in plant.sensors for t in ends}
    messages = [(s.encode(), encode_reading(s, ts, v)) for s, ts, v in readings]
    # the grid's last window is the same after any restart; a count's phase may shift, so its last window may
    # end up to stride - 1 readings before the end
    tail_ms = max(ends) if grid else ts_of[-stride]
    sent = {(s, ts) for s, ts, _ in readings if ts <= tail_ms}
    return PlantStream(messages, expected, injected, (w - 1) * plant.period_ms, sent, plant.period_ms)


def trained_bundle(cfg: Config, n_sensors: int = 6, epochs: int = 25) -> tuple[Any, float]:
    """A real model of the plant of ``n_sensors`` (as ``tests/conftest.small_bundle``) whose threshold is set to
    1e-9 so every window is emitted; returns it and the calibrated threshold (used to judge detection)."""
    from aestream.training.build import train_bundle

    plant = Plant(n_sensors, cfg.stream.channels, seed=0)
    normal = plant.signal(800)
    model = cfg.replace(model={"family": "vanilla", "epochs": epochs, "hidden_size": 32, "latent_size": 6,
                               "torch_threads": 1, "device": "cpu", "input_smoothing": 1,
                               "detrend_channels": ()}).model
    bundle = train_bundle(list(normal), cfg.stream, model, cfg.threshold)
    calibrated = float(bundle.threshold)
    bundle.threshold = 1e-9
    return bundle, calibrated


class Producer(threading.Thread):
    """Publishes ``messages`` to ``topic`` at ``rate`` messages/s (0 = as fast as possible); ``error`` is set
    when a send fails, so a test that waits for the topic to fill says so instead of waiting out its timeout.

    Not idempotent, one request in flight (as the daemon's own sink): kafka-python 3.0.12's idempotent producer
    can meet a broker restart with an out-of-order sequence and then fails the batches it had in flight, which
    loses input readings. Without it a retry across the restart keeps the order and at worst repeats a reading.
    """

    def __init__(self, bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], rate: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.messages, self.rate = bootstrap, topic, messages, rate
        self.sent = 0
        self.error: BaseException | None = None
        self.paused = threading.Event()

    def run(self) -> None:
        try:
            producer = KafkaProducer(bootstrap_servers=[self.bootstrap], linger_ms=5, acks="all",
                                     retries=1_000_000, delivery_timeout_ms=600_000, enable_idempotence=False,
                                     max_in_flight_requests_per_connection=1)
            t0 = time.monotonic()
            chunk = 50
            futures = []
            for i in range(0, len(self.messages), chunk):
                while self.paused.is_set():
                    time.sleep(0.05)
                futures += [producer.send(self.topic, key=k, value=v) for k, v in self.messages[i:i + chunk]]
                self.sent = min(i + chunk, len(self.messages))
                if self.rate:
                    ahead = t0 + self.sent / self.rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
                self._check(futures)
            producer.flush(timeout=600)
            self._check(futures)
            producer.close()
        except BaseException as e:
            self.error = e

    @staticmethod
    def _check(futures: list[Any]) -> None:
        """Raise the first failure among the sends that are done (and forget those)."""
        done = 0
        for f in futures:
            if not f.is_done:
                break
            if f.exception is not None:
                raise RuntimeError(f"a send failed: {f.exception!r}")
            done += 1
        del futures[:done]


# -- reading back -----------------------------------------------------------------------------------------------
def read_topic(bootstrap: str, topic: str, idle_s: float = 1.5) -> list[Any]:
    """Every message of ``topic`` (as kafka-python ConsumerRecords), from the beginning, without a group."""
    consumer = KafkaConsumer(bootstrap_servers=[bootstrap], enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[Any] = []
        last = time.monotonic()
        while time.monotonic() - last < idle_s or any(consumer.position(tp) < ends[tp] for tp in tps):
            batch = consumer.poll(timeout_ms=300)
            for msgs in batch.values():
                out.extend(msgs)
                last = time.monotonic()
            if time.monotonic() - last > 60:
                break
        return out
    finally:
        consumer.close()


def offsets(bootstrap: str, group: str, topic: str) -> dict[int, tuple[int, int]]:
    """Per partition: (committed offset of ``group`` or -1, end offset). Reads the group's offsets without
    joining it."""
    consumer = KafkaConsumer(bootstrap_servers=[bootstrap], group_id=group, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = consumer.end_offsets(tps)
        out = {}
        for tp in tps:
            c = consumer.committed(tp)
            out[tp.partition] = (-1 if c is None else c, ends[tp])
        return out
    finally:
        consumer.close(autocommit=False)


def wait_for_partitions(bootstrap: str, topic: str, n: int, timeout_s: float = 30.0) -> None:
    """Until ``topic`` has ``n`` partitions with leaders (their end offsets answer). A worker that joins its group
    before that may get no assignment until its next metadata refresh (kafka-python ``metadata_max_age_ms``,
    5 min): seen here as "No partition metadata for topic" and a worker idle for minutes."""
    def ready() -> bool:
        consumer = KafkaConsumer(bootstrap_servers=[bootstrap])
        try:
            parts = consumer.partitions_for_topic(topic) or set()
            if len(parts) < n:
                return False
            consumer.end_offsets([TopicPartition(topic, p) for p in parts])
            return True
        except KafkaError:
            return False
        finally:
            consumer.close()

    wait_until(ready, timeout_s, every_s=0.5, what=f"{n} partitions of {topic} with leaders")


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    try:
        return sum(max(c, 0) for c, _ in offsets(bootstrap, group, topic).values())
    except KafkaError:
        return -1


def drained(bootstrap: str, group: str, topic: str, total: int) -> bool:
    try:
        got = offsets(bootstrap, group, topic)
    except KafkaError:
        return False
    # a partition that never received a message has no committed offset (-1) and end 0
    return sum(e for _, e in got.values()) >= total and all(max(c, 0) == e for c, e in got.values())


# -- the verdict ------------------------------------------------------------------------------------------------
@dataclass
class Audit:
    messages: int
    skipped: int  # input messages beyond the group's committed offsets at the end (must be 0)
    readings_uncovered: list[tuple[str, int]]  # readings inside no reported window (must be none)
    windows_expected: int  # window ends of one uninterrupted run
    windows_off_grid: int  # reported windows not on that grid (a restart shifted a count-based stride's phase)
    windows_bogus: list[tuple[str, int]]  # reported window ends that are no reading's time (must be none)
    events: int
    duplicate_events: int  # events for a window already seen (same id, so consumers dedupe)
    conflicting_ids: list[tuple[str, int]]  # windows reported under more than one event id (must be none)
    off_phase: int  # reported ends closer than a stride to the sensor's previous one: the same readings
    #                 re-reported under a different window end (so a different id) after a restart shifted a
    #                 count-based stride's phase (stream.stride > 1; stream.stride_ms has no phase to lose)
    versions: set[str]
    anomalies_injected: int
    detected: set[int]
    missed: list[Injected] = field(default_factory=list)

    @property
    def anomalies_detected(self) -> int:
        return len(self.detected)

    def gaps(self) -> dict[str, list[tuple[int, int, int]]]:
        """Uncovered readings per sensor as runs ``(first ms, last ms, count)``, for failure messages."""
        runs: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        for sensor, ts in self.readings_uncovered:
            r = runs[sensor]
            if r and ts - r[-1][1] <= 10_000:
                r[-1] = (r[-1][0], ts, r[-1][2] + 1)
            else:
                r.append((ts, ts, 1))
        return dict(runs)

    @property
    def ok(self) -> bool:
        return (self.skipped == 0 and not self.readings_uncovered and not self.windows_bogus
                and not self.conflicting_ids)


def audit(bootstrap: str, cfg: Config, stream: PlantStream, calibrated_threshold: float,
          every_window: Iterable[str] | None = None) -> Audit:
    """Every reading must lie in a reported window (an every-window model, threshold 1e-9), every window under
    one id, every injected anomaly in a window scored over the calibrated threshold, no offset left behind.
    ``every_window``: the sensors whose every window is reported (the others' are not: only theirs are checked
    for coverage); all by default."""
    k = cfg.kafka
    topic = k.input_topics[0]
    every = None if every_window is None else set(every_window)
    got = offsets(bootstrap, k.group_id, topic)
    skipped = sum(max(end - max(c, 0), 0) for c, end in got.values())
    events = [json.loads(m.value) for m in read_topic(bootstrap, k.output_topic)]
    ids: dict[tuple[str, int], set[str]] = defaultdict(set)
    for e in events:
        ids[(e["sensor"], e["window_end_ms"])].add(e["event_id"])
    seen = set(ids)
    tail = max(ts for _, ts in stream.readings)
    covered: set[tuple[str, int]] = set()
    for sensor, end in seen:
        covered.update((sensor, end - i * stream.period_ms) for i in range(stream.window_ms // stream.period_ms + 1))
    detected = {i for i, inj in enumerate(stream.injected) if _hit(inj, events, stream, calibrated_threshold)}
    missed = [inj for i, inj in enumerate(stream.injected) if i not in detected]
    return Audit(
        messages=len(stream.messages), skipped=skipped,
        readings_uncovered=sorted(r for r in stream.readings - covered if every is None or r[0] in every),
        windows_expected=len(stream.expected_windows), windows_off_grid=len(seen - stream.expected_windows),
        windows_bogus=sorted(w for w in seen if w not in stream.readings and w[1] <= tail), events=len(events),
        duplicate_events=len(events) - len(seen),
        conflicting_ids=sorted(w for w, s in ids.items() if len(s) > 1), off_phase=_off_phase(seen, cfg, stream),
        versions={e["model_version"] for e in events}, anomalies_injected=len(stream.injected),
        detected=detected, missed=missed)


def detected_uninterrupted(cfg: Config, bundle: Any, stream: PlantStream, calibrated_threshold: float) -> set[int]:
    """The injected anomalies (indices) that one uninterrupted in-process run detects: the bar for a faulty run
    (the small test model misses some shifts on low-gain channels whatever the faults)."""
    from aestream.stream.messages import Record
    from aestream.worker import Worker

    class _Models:
        def current(self) -> str:
            return str(bundle.version)

        def load(self, version: str | None = None, device: str = "cpu") -> Any:
            return bundle

    class _Sink:
        def send(self, msg: Any) -> None: ...
        def flush(self, timeout_s: float = 60.0) -> None: ...
        def close(self, timeout_s: float = 10.0) -> None: ...

    worker = Worker(cfg, None, _Sink(), _Models())  # type: ignore[arg-type]
    worker.refresh_model(force=True)
    events: list[dict[str, Any]] = []
    for i in range(0, len(stream.messages), 1000):
        recs = [Record("in", 0, i + j, key, value, 0) for j, (key, value) in enumerate(stream.messages[i:i + 1000])]
        events.extend(worker.process(recs).events_out)
    return {i for i, inj in enumerate(stream.injected) if _hit(inj, events, stream, calibrated_threshold)}


def _off_phase(seen: set[tuple[str, int]], cfg: Config, stream: PlantStream) -> int:
    by_sensor: dict[str, list[int]] = defaultdict(list)
    for sensor, end in seen:
        by_sensor[sensor].append(end)
    step = cfg.stream.stride_ms or cfg.stream.stride * stream.period_ms
    expected = stream.expected_windows
    return sum(int(b - a < step and not {(s, a), (s, b)} <= expected)
               for s, ends in by_sensor.items() for a, b in zip(sorted(ends), sorted(ends)[1:]))


def _hit(inj: Injected, events: list[dict[str, Any]], stream: PlantStream, threshold: float) -> bool:
    """Some reported window overlapping the anomaly scores over the calibrated threshold."""
    return any(e["sensor"] == inj.sensor and e["window_end_ms"] >= inj.start_ms
               and e["window_end_ms"] - stream.window_ms <= inj.end_ms and e["score"] > threshold for e in events)


@dataclass
class AlertAudit:
    events: int  # episode events read (opened, updated, resolved), redeliveries included
    redelivered: int  # copies of an event already read (same event id: at-least-once, consumers dedupe)
    by_type: dict[str, int]  # distinct episode events per type
    episodes: int
    duplicate_opened: list[str]  # episode ids opened twice, or opened while their sensor's previous one was open
    orphaned: list[str]  # episode ids with updated or resolved events but no opened
    unattached: list[tuple[str, int]]  # windows in alarm (sensor, end) in no episode and in no cooldown
    suppressed: int  # windows in alarm in the cooldown after an episode (open nothing, by design)

    @property
    def lost(self) -> int:
        return len(self.orphaned) + len(self.unattached)


def alert_audit(alerts: list[dict[str, Any]], anomalies: list[dict[str, Any]], cooldown_ms: int) -> AlertAudit:
    """The episodes of the ``alerts`` topic's events against the ``anomalies`` (the output topic's events: the
    windows in alarm), with ``alerts.cooldown_ms``. Per sensor, by the window ends the events carry:

    * an episode is *opened twice* when its id has more than one distinct ``opened`` event, or when it opens
      while the sensor's previous episode (by opening window end) has no ``resolved`` event ending at or before
      its opening window (one incident reported as two);
    * an episode is *orphaned* when it has ``updated`` or ``resolved`` events but no ``opened``;
    * a window in alarm is *unattached* when it ends neither within an episode of its sensor (from its opening
      window end, up to its resolving window end if it resolved) nor within ``cooldown_ms`` after one resolved.
    """
    seen: set[str] = set()
    eps: dict[str, dict[str, Any]] = {}
    by_type: dict[str, int] = defaultdict(int)
    n = 0
    for e in alerts:
        if e.get("category") != "anomaly":
            continue
        n += 1
        if e["event_id"] in seen:
            continue
        seen.add(e["event_id"])
        by_type[e["type"]] += 1
        ep = eps.setdefault(e["episode_id"], {"sensor": e["sensor"], "opened_ms": e["episode"]["opened_ms"],
                                              "opened": 0, "other": 0, "resolved_ms": None})
        if e["type"] == "opened":
            ep["opened"] += 1
        else:
            ep["other"] += 1
        if e["type"] == "resolved":
            ep["resolved_ms"] = e["episode"]["resolved_ms"]
    twice = {i for i, ep in eps.items() if ep["opened"] > 1}
    by_sensor: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for i, ep in eps.items():
        by_sensor[ep["sensor"]].append({**ep, "id": i})
    for episodes in by_sensor.values():
        episodes.sort(key=lambda ep: ep["opened_ms"])
        for prev, cur in zip(episodes, episodes[1:]):
            if prev["resolved_ms"] is None or prev["resolved_ms"] > cur["opened_ms"]:
                twice.add(cur["id"])
    unattached, suppressed = [], 0
    for sensor, end in sorted({(a["sensor"], a["window_end_ms"]) for a in anomalies}):
        episodes = by_sensor.get(sensor, [])
        if any(ep["opened_ms"] <= end and (ep["resolved_ms"] is None or end <= ep["resolved_ms"]) for ep in episodes):
            continue
        if any(ep["resolved_ms"] is not None and ep["resolved_ms"] <= end < ep["resolved_ms"] + cooldown_ms
               for ep in episodes):
            suppressed += 1
        else:
            unattached.append((sensor, end))
    return AlertAudit(events=n, redelivered=n - len(seen), by_type=dict(by_type), episodes=len(eps),
                      duplicate_opened=sorted(twice), orphaned=sorted(i for i, ep in eps.items() if not ep["opened"]),
                      unattached=unattached, suppressed=suppressed)


# -- the kill -9 scenario (used by the test and the soak) -------------------------------------------------------
@dataclass
class KillReport:
    cycles: int
    peak_rss_bytes: int
    exit_code: int
    logs: list[str]


def kill9_cycles(bootstrap: str, cfg: Config, config_path: Path, logdir: Path, stream: PlantStream,
                 cycles: int, rate: float, seed: int = 0, timeout_s: float = 600.0) -> KillReport:
    """Produce ``stream`` at ``rate`` while a worker is kill -9-ed at a random point ``cycles`` times and
    restarted; then let a last worker drain the topic and stop it with SIGTERM."""
    rnd = random.Random(seed)
    k = cfg.kafka
    topic = k.input_topics[0]
    wait_for_partitions(bootstrap, topic, 1)
    producer = Producer(bootstrap, topic, stream.messages, rate)
    producer.start()
    peak = 0
    logs: list[str] = []
    live: list[WorkerProc] = []
    try:
        for cycle in range(cycles):
            before = committed_total(bootstrap, k.group_id, topic)
            w = WorkerProc(config_path, logdir / f"worker-{cycle}.log")
            live.append(w)
            # wait until this worker has committed something (joined, rebuilt, processing), then a random while
            wait_until(lambda b=before, w=w: committed_total(bootstrap, k.group_id, topic) > b or not w.alive, 120,
                       every_s=0.1, what=f"worker {cycle} progress")
            assert w.alive, f"worker {cycle} died on its own:\n{w.log_text()[-3000:]}"
            time.sleep(rnd.uniform(0.0, 1.5))
            w.kill9()
            live.remove(w)
            peak = max(peak, w.peak_rss_bytes)
            logs.append(w.log_text())
        last = WorkerProc(config_path, logdir / "worker-last.log")
        live.append(last)
        # in its loop before the SIGTERM, even when the killed worker had committed everything already
        wait_until(lambda: "serving model" in last.log_text() or not last.alive, 120, every_s=0.1,
                   what="the last worker to start")
        deadline = time.monotonic() + timeout_s
        while producer.is_alive() or not drained(bootstrap, k.group_id, topic, len(stream.messages)):
            assert last.alive, f"the last worker died:\n{last.log_text()[-3000:]}"
            assert time.monotonic() < deadline, "the last worker did not drain the topic in time"
            last.sample_rss()
            time.sleep(0.3)
        assert producer.error is None, producer.error
        code = last.terminate()
        live.remove(last)
        peak = max(peak, last.peak_rss_bytes)
        logs.append(last.log_text())
        return KillReport(cycles, peak, code, logs)
    finally:
        for w in live:
            w.kill9()
