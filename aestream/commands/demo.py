"""``aestream demo``: the whole pipeline on a small simulated plant, end to end on a real broker, told as a story.

Starts the local broker when the configured one does not answer (and it is the local default), trains the
configured family on the plant's normal start, publishes a stream with anomalies injected at known times and runs
the worker (built by :func:`aestream.app.build_app`) with alerts on. While it runs, one line per alert episode
opened or resolved, read back from the alerts topic; at the end a table of the injected anomalies (detected or not,
and how many seconds after they began), the count of false episodes, the path of the HTML report, and
``detected X of Y injected anomalies``. Long steps (training, publishing) show a progress bar on a terminal.

The demo turns alerts on for itself only (:data:`DEMO_SETTINGS`); the shipped ``config.toml`` keeps them off.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from aestream.app import build_app
from aestream.commands.simulate import Injected, Plant
from aestream.config import Config
from aestream.errors import AestreamError
from aestream.kafka.kafka_python import ensure_topics, open_sink, tail_topic, wait_for_broker
from aestream.models.store import ModelStore
from aestream.stream.codec import encode_reading
from aestream.stream.events import iso_ms
from aestream.stream.messages import Outgoing
from aestream.training.build import train_bundle
from aestream.training.fit import progress_bars

__all__ = ["DEMO_SETTINGS", "DemoResult", "Detection", "detect", "episode_line", "episode_spans", "false_episodes",
           "run_demo", "start_local_broker", "stray_events", "table"]

log = logging.getLogger(__name__)

KAFKA_SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "kafka.sh"
LOCAL_HOSTS = ("127.0.0.1", "localhost")
# The demo's own settings on top of the user's config: alerts on (episodes on their own topic), and a cooldown of
# one minute instead of five, which in a 15-minute stream would hide a real anomaly behind an earlier false alarm.
DEMO_SETTINGS: dict[str, dict[str, Any]] = {
    "alerts": {"enabled": True, "cooldown_ms": 60_000},
    # each sensor's own model is fine-tuned inside the step, so the story is the same on every run
    "baselines": {"finetune_blocking": True},
}


def start_local_broker(bootstrap: str, out: TextIO = sys.stdout) -> bool:
    """Start ``deploy/kafka/kafka.sh`` on the bootstrap's port if nothing listens there; ``True`` if started."""
    host, _, port = bootstrap.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return False
    except OSError:
        pass
    if host not in LOCAL_HOSTS or not KAFKA_SCRIPT.is_file():
        raise SystemExit(f"no Kafka broker answers at {bootstrap}; start one or set kafka.bootstrap_servers")
    print(f"starting a local Kafka broker on {bootstrap} (jars are fetched once, then cached) ...", file=out,
          flush=True)
    done = subprocess.run(["bash", str(KAFKA_SCRIPT), "start", port])
    if done.returncode != 0:
        raise AestreamError(f"the local broker did not start ({KAFKA_SCRIPT.name} start exited {done.returncode}; "
                            "its lines above say why): it needs Java 17+ and Maven (which fetches its jars once), "
                            "or start a broker yourself and set kafka.bootstrap_servers")
    return True


@dataclass(frozen=True)
class Detection:
    """An injected anomaly and how long after its start the first alarm window of its sensor ended
    (``None``: missed)."""

    injected: Injected
    delay_s: float | None

    @property
    def detected(self) -> bool:
        return self.delay_s is not None


@dataclass
class DemoResult:
    """What the demo saw: one :class:`Detection` per injected anomaly, the episodes opened and how many of them
    overlap no injected anomaly, the anomaly events outside every injected anomaly, and the report written
    (``None`` without matplotlib)."""

    detections: list[Detection]
    episodes: int
    false_episodes: int
    stray_events: int
    events: int
    report: Path | None = None

    @property
    def detected(self) -> int:
        return sum(d.detected for d in self.detections)

    @property
    def injected(self) -> int:
        return len(self.detections)


def _covers(i: Injected, sensor: str, first_ms: int, last_ms: float, slack_ms: int) -> bool:
    return sensor == i.sensor and first_ms <= i.end_ms + slack_ms and last_ms >= i.start_ms


def detect(injected: Iterable[Injected], events: list[dict[str, Any]], slack_ms: int) -> list[Detection]:
    """For each injected anomaly, the first anomaly event of its sensor whose window ends inside
    ``[start, end + slack]``: detected, with its delay from the start.

    >>> inj = [Injected("s", "shift", 1000, 2000, ("a",)), Injected("t", "shift", 1000, 2000, ("a",))]
    >>> [d.delay_s for d in detect(inj, [{"sensor": "s", "window_end_ms": 2500}, {"sensor": "t", "window_end_ms": 1}],
    ...                              1000)]
    [1.5, None]
    """
    out = []
    for i in injected:
        ends = [e["window_end_ms"] for e in events if _covers(i, e["sensor"], e["window_end_ms"], e["window_end_ms"],
                                                                slack_ms)]
        out.append(Detection(i, (min(ends) - i.start_ms) / 1000 if ends else None))
    return out


def stray_events(injected: list[Injected], events: list[dict[str, Any]], slack_ms: int) -> int:
    """Anomaly events whose window lies outside every injected anomaly of their sensor (plus the slack)."""
    return sum(not any(_covers(i, e["sensor"], e["window_end_ms"], e["window_end_ms"], slack_ms) for i in injected)
               for e in events)


def episode_spans(alerts: list[dict[str, Any]]) -> list[tuple[str, int, float]]:
    """``(sensor, opening window end, resolving window end)`` of each episode in ``opened`` and ``resolved`` alert
    events; an episode still open at the end lasts for ever."""
    spans: dict[str, list[Any]] = {}
    for doc in alerts:
        if doc.get("type") == "opened":
            spans[doc["episode_id"]] = [doc["sensor"], doc["window_end_ms"], float("inf")]
        elif doc.get("type") == "resolved" and doc.get("episode_id") in spans:
            spans[doc["episode_id"]][2] = doc["window_end_ms"]
    return [(s, first, last) for s, first, last in spans.values()]


def false_episodes(injected: list[Injected], alerts: list[dict[str, Any]], slack_ms: int) -> int:
    """Episodes that overlap no injected anomaly of their sensor (plus the slack).

    >>> inj = [Injected("s", "shift", 1000, 2000, ("a",))]
    >>> docs = [{"type": "opened", "episode_id": "e1", "sensor": "s", "window_end_ms": 1500},
    ...         {"type": "opened", "episode_id": "e2", "sensor": "s", "window_end_ms": 9000},
    ...         {"type": "resolved", "episode_id": "e2", "sensor": "s", "window_end_ms": 9900}]
    >>> false_episodes(inj, docs, 500)
    1
    """
    return sum(not any(_covers(i, sensor, first, last, slack_ms) for i in injected)
               for sensor, first, last in episode_spans(alerts))


def episode_line(doc: dict[str, Any]) -> str | None:
    """The one line an ``opened`` or ``resolved`` alert event gets (``None`` for the others); times are the
    event time (UTC) of the window that caused it.

    >>> episode_line({"type": "opened", "sensor": "s", "severity": "critical", "window_end_ms": 1767225600000,
    ...               "ratio": 3.2, "channels": [{"name": "a", "share": 0.75}, {"name": "b", "share": 0.2}]})
    '00:00:00 episode opened   s  critical  3.2x threshold, top channels: a 75%, b 20%'
    >>> episode = {"severity": "warning", "peak_ratio": 1.5, "n_windows": 30, "opened_ms": 1000, "resolved_ms": 61000}
    >>> episode_line({"type": "resolved", "sensor": "s", "window_end_ms": 1767225661000, "episode": episode})
    '00:01:01 episode resolved s  after 60 s, warning, peak 1.5x threshold, 30 windows in alarm'
    """
    at = iso_ms(doc.get("window_end_ms", 0))[11:19]
    if doc.get("type") == "opened":
        channels = ", ".join(f"{c['name']} {c['share']:.0%}" for c in doc["channels"])
        return (f"{at} episode opened   {doc['sensor']}  {doc['severity']}  {doc['ratio']:.1f}x threshold, "
                f"top channels: {channels}")
    if doc.get("type") == "resolved":
        ep = doc["episode"]
        windows = f"{ep['n_windows']} window{'s' if ep['n_windows'] != 1 else ''}"
        return (f"{at} episode resolved {doc['sensor']}  after {(ep['resolved_ms'] - ep['opened_ms']) / 1000:.0f} s, "
                f"{ep['severity']}, peak {ep['peak_ratio']:.1f}x threshold, {windows} in alarm")
    return None


def table(detections: list[Detection]) -> list[str]:
    """The closing table of injected anomalies, one row each.

    >>> print("\\n".join(table([Detection(Injected("s", "shift", 1767225600000, 1767225660000, ("a", "b")), 4.0)])))
    injected     sensor     from      channels                         detected  delay
    shift        s          00:00:00  a, b                             yes        4 s
    """
    rows = [f"{'injected':<12} {'sensor':<10} {'from':<9} {'channels':<32} {'detected':<9} delay"]
    for d in detections:
        i = d.injected
        delay = f"{d.delay_s:>2.0f} s" if d.delay_s is not None else "-"
        rows.append(f"{i.kind:<12} {i.sensor:<10} {iso_ms(i.start_ms)[11:19]:<9} {', '.join(i.channels):<32.32} "
                    f"{'yes' if d.detected else 'NO':<9} {delay}")
    return rows


def run_demo(cfg: Config, out: TextIO = sys.stdout, n_sensors: int = 6, train_steps: int = 1200,
             stream_steps: int = 900, seed: int = 7) -> DemoResult:
    """Run the demo with ``cfg`` plus :data:`DEMO_SETTINGS` (topics, group, model and state directories get a
    fresh per-run name)."""
    run = time.strftime("%Y%m%d-%H%M%S")
    cfg = _demo_config(cfg, run)
    k = cfg.kafka
    start_local_broker(k.bootstrap_servers[0], out)
    wait_for_broker(k)
    ensure_topics(k, {k.input_topics[0]: 3, k.output_topic: 1, k.dead_letter_topic: 1, cfg.alerts.topic: 1})

    plant = Plant(n_sensors, cfg.stream.channels, seed=seed)
    _train(cfg, plant, train_steps, out)
    warm = cfg.baselines.n_readings * cfg.stream.stride if cfg.baselines.mode != "off" else 0
    step = stream_steps // 5
    plan = [(i % n_sensors, kind, step * (1 + i) + train_steps + warm, 60)
            for i, kind in enumerate(("shift", "decouple", "oscillation", "shift"))]
    start_ms = int(time.time() * 1000) - (train_steps + warm + stream_steps) * plant.period_ms
    _publish(cfg, plant.readings(warm + stream_steps, start_ms, plan, step0=train_steps))
    if warm:
        print(f"each sensor first calibrates its own baseline on {cfg.baselines.n_readings} normal readings "
              f"({cfg.baselines.mode}); no events meanwhile", file=out, flush=True)
    print(f"published {warm + stream_steps} s of readings of {n_sensors} sensors with {len(plan)} anomalies "
          "injected; the worker scores them (one line per alert episode, event time UTC):", file=out, flush=True)

    events, alerts, totals = _watch(cfg, out)
    slack = (cfg.stream.window_size + cfg.threshold.n * cfg.stream.stride) * plant.period_ms  # a window + the hold
    result = DemoResult(detect(plant.injected, events, slack), len(episode_spans(alerts)),
                        false_episodes(plant.injected, alerts, slack), stray_events(plant.injected, events, slack),
                        len(events))
    print(totals, file=out)
    for row in table(result.detections):
        print(row, file=out)
    print(f"false episodes: {result.false_episodes} of {result.episodes} ({result.stray_events} of {result.events} "
          "anomaly events lie outside the injected anomalies)", file=out)
    result.report = _report(cfg, run, [*events, *alerts], out)
    print(f"detected {result.detected} of {result.injected} injected anomalies", file=out, flush=True)
    return result


def _demo_config(cfg: Config, run: str) -> Config:
    a = {**DEMO_SETTINGS.get("alerts", {}), "topic": f"demo-alerts-{run}"}
    return cfg.replace(**{**DEMO_SETTINGS, "alerts": a},
                       kafka={"input_topics": (f"demo-readings-{run}",), "output_topic": f"demo-anomalies-{run}",
                              "dead_letter_topic": f"demo-dead-letter-{run}", "group_id": f"demo-{run}"},
                       paths={"model_dir": str(Path(cfg.paths.model_dir) / f"demo-{run}"),
                              "state_dir": str(Path(cfg.paths.state_dir) / f"demo-{run}")},
                       ops={"metrics_enabled": False})


def _train(cfg: Config, plant: Plant, train_steps: int, out: TextIO) -> None:
    print(f"training a {cfg.model.family} autoencoder on {train_steps} normal readings of {len(plant.sensors)} "
          "sensors ...", file=out, flush=True)
    t0 = time.monotonic()
    with progress_bars():
        bundle = train_bundle(list(plant.signal(train_steps)), cfg.stream, cfg.model, cfg.threshold,
                              info={"trained_on": "demo plant normal start"})
    version = ModelStore(cfg.paths.model_dir).publish(bundle)
    print(f"model {version} trained in {time.monotonic() - t0:.0f} s on {bundle.scorer.device.type}; threshold "
          f"{bundle.threshold:.3g}", file=out, flush=True)


def _publish(cfg: Config, readings: list[tuple[str, int, list[float]]]) -> None:
    sink = open_sink(cfg.kafka)
    topic = cfg.kafka.input_topics[0]
    for sensor, ts, values in tqdm(readings, desc="publishing", unit="reading", file=sys.stderr, leave=False,
                                   disable=None):
        sink.send(Outgoing(topic, encode_reading(sensor, ts, values), sensor.encode()))
    sink.flush()
    sink.close()


def _watch(cfg: Config, out: TextIO) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """Run the worker until the stream is drained; print episodes from the alerts topic as they come; return the
    anomaly events, the alert events and a line of the worker's totals."""
    app = build_app(cfg)
    thread = threading.Thread(target=app.run, kwargs={"max_idle_s": 5.0}, name="worker", daemon=True)
    thread.start()
    events: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: events.extend(tail_topic(cfg.kafka, cfg.kafka.output_topic,
                                                                      until=thread.is_alive)),
                              name="anomalies", daemon=True)
    reader.start()
    alerts = []
    for doc in tail_topic(cfg.kafka, cfg.alerts.topic, until=thread.is_alive):
        alerts.append(doc)
        line = episode_line(doc)
        if line is not None:
            print(line, file=out, flush=True)
    thread.join()
    reader.join()
    t = app.worker.totals
    return events, alerts, (f"worker: {t.readings} readings, {t.windows} windows scored, {t.events} anomaly events "
                            f"(windows in alarm), {len(alerts)} alert events, {t.dead_letters} dead letters")


def _report(cfg: Config, run: str, docs: list[dict[str, Any]], out: TextIO) -> Path | None:
    from aestream.commands.report import write_report

    path = Path(cfg.paths.state_dir) / "report.html"
    try:
        write_report(docs, path, title=f"aestream demo {run}")
    except AestreamError as e:
        print(f"no report: {e}", file=out)
        return None
    print(f"report: {path.resolve()} (open it in a browser)", file=out)
    return path
