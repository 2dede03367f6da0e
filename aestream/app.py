"""The composition root: :func:`build_app` turns a :class:`~aestream.config.Config` into a running worker with
every stage the config asks for, its metrics and health endpoints and scheduled retraining; :func:`build_trainer`
into the fleet's one trainer (``aestream trainer``); :func:`open_model_store` into the store models are served
from (a directory, or the models topic).

``aestream run``, the demo and the benchmarks all build their worker here. Tests and benchmarks inject their own
source, sink or model source; everything else comes from the config. Each hook is handed to its object when it
is built (the consumer's rebalance callbacks, the webhook give-ups and retrain outcomes into the metrics, the
metrics observer into the worker): nothing is patched afterwards.

>>> from aestream.config import Config
>>> app = build_app(Config().replace(ops={"metrics_enabled": False}), source=_Null(), sink=_Null(), models=_Null())
>>> [type(s).__name__ for s in app.worker.stages], app.ops is None, app.retraining is None
([], True, True)
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aestream.alerts import build_alert_stage
from aestream.alerts.routing import check_alerts
from aestream.config import Config, KafkaConfig
from aestream.detect.scoring import resolve_device
from aestream.errors import ConfigError, first_line
from aestream.kafka.protocols import Changelog, ModelSource, ModelStoreLike, Sink, Source
from aestream.models.store import ModelStore
from aestream.ops.instrument import WorkerMetrics, start_ops_server
from aestream.ops.metrics import Metrics, RetrainMetrics
from aestream.ops.server import OpsServer, broker_check, check_port
from aestream.outputs.streams import StreamsStage
from aestream.retrain.reservoir import Reservoir
from aestream.retrain.retrainer import Retrainer, RetrainOutcome, Trainer
from aestream.retrain.scheduler import Retraining, build_retraining, make_trigger, schedule
from aestream.retrain.stage import ReservoirStage
from aestream.stream.messages import Partition
from aestream.stream.stages import Stage
from aestream.training.build import train_bundle_from_windows
from aestream.worker import StepStats, Worker, WorkerObserver

__all__ = ["App", "TrainerApp", "build_app", "build_trainer", "changelog_topic", "check_config", "check_device",
           "check_kafka", "models_topic", "normal_windows_topic", "open_model_store"]

log = logging.getLogger(__name__)


@dataclass
class App:
    """A built worker and what runs beside it. :meth:`run` blocks until :meth:`stop` (SIGTERM in the CLI)."""

    worker: Worker
    metrics: Metrics
    retraining: Retraining | None = None
    ops: OpsServer | None = None

    def run(self, max_idle_s: float | None = None) -> StepStats:
        """Start retraining and the loop; on the way out stop both and the HTTP endpoints."""
        if self.retraining is not None:
            self.retraining.start()
        try:
            return self.worker.run(max_idle_s=max_idle_s)
        finally:
            if self.retraining is not None:
                self.retraining.close()  # kills a training in flight, saves the reservoir
            if self.ops is not None:
                self.ops.stop()

    def stop(self) -> None:
        """End the loop after the step in flight (safe from a signal handler or another thread)."""
        self.worker.stop()


def build_app(
    cfg: Config,
    *,
    source: Source | None = None,
    sink: Sink | None = None,
    models: ModelSource | None = None,
    device: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    observers: tuple[WorkerObserver, ...] = (),
    stages: list[Stage] | None = None,
    model_check_interval_s: float = 1.0,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> App:
    """Build the worker ``cfg`` describes; ``source``, ``sink`` and ``models`` replace the Kafka clients and the
    model directory, ``stages`` the alert, streams and retraining stages (tests, benchmarks). ``device`` overrides
    ``model.device``."""
    check_config(cfg)
    check_device(device or cfg.model.device, "option --device" if device else "config key model.device")
    if device:  # for all of the worker: scoring, and the fine-tunes and retraining it runs
        cfg = cfg.replace(model={"device": device})
    if models is None:  # before any client connects: a fleet's store without its key fails here
        models = open_model_store(cfg)
    worker: Worker | None = None
    if cfg.model.torch_threads > 0:  # scoring's intra-op threads (training sets its own)
        torch.set_num_threads(cfg.model.torch_threads)

    def revoked(parts: list[Partition]) -> None:  # the consumer calls back only from poll(), once the worker exists
        assert worker is not None
        worker.on_partitions_changed(parts)

    def assigned(parts: list[Partition]) -> None:
        assert worker is not None
        worker.on_partitions_assigned(parts)

    changelog = alerts_changelog = None
    on_kafka = source is None  # not a test's or a benchmark's source
    if on_kafka and cfg.ops.metrics_enabled:  # a port in use fails before the clients' bootstrap, not after it
        check_port(cfg.ops.metrics_host, cfg.ops.metrics_port)
    if source is None:
        from aestream.kafka.changelog import KafkaChangelog
        from aestream.kafka.kafka_python import open_source

        s = cfg.stream
        source = open_source(cfg.kafka, on_revoke=revoked, on_assign=assigned,
                             decode=(s.channels, s.max_message_bytes, s.max_readings_per_message))
        if cfg.baselines.mode != "off":
            changelog = KafkaChangelog(cfg.kafka, changelog_topic(cfg), large=cfg.baselines.mode == "finetune")
        if cfg.alerts.enabled:
            alerts_changelog = KafkaChangelog(cfg.kafka, changelog_topic(cfg, "alerts"))
    metrics = Metrics()
    retraining = None
    if stages is None:
        stages = _stages(cfg, metrics, lambda: worker.bundle if worker is not None else None, alerts_changelog)
        r = cfg.retrain
        if r.enabled and cfg.fleet.retrain_in == "trainer":  # the fleet's trainer retrains: send it our windows
            from aestream.kafka.normal_windows import ensure_normal_windows_topic

            topic = normal_windows_topic(cfg)
            if on_kafka:
                ensure_normal_windows_topic(cfg.kafka, topic, r.max_age_s)
            stages.append(ReservoirStage(None, topic=topic, guard_s=r.guard_s,
                                         regime_change_after_s=r.regime_change_after_s,
                                         sample_interval_s=r.sample_interval_s))
        elif r.enabled:
            retraining = build_retraining(cfg, open_model_store(cfg),
                                          on_outcome=lambda o: metrics.retrain(o.status, o.seconds))
            assert retraining is not None and retraining.stage is not None
            stages.append(retraining.stage)
    if sink is None:
        from aestream.kafka.kafka_python import open_sink

        changelogs = [c for c in (changelog, alerts_changelog) if c is not None]
        for c in changelogs:
            c.ensure()  # before the producer asks for its metadata: a broker would create it, not compacted
        sent = [*(c.topic for c in changelogs), cfg.kafka.output_topic, cfg.kafka.dead_letter_topic,
                *(t for st in stages for t in st.topics())]
        sink = open_sink(cfg.kafka, on_refused=metrics.message_refused, topics=dict.fromkeys(sent))
    watch: tuple[WorkerObserver, ...] = observers
    ops = None
    if cfg.ops.metrics_enabled and hasattr(source, "lag"):
        broker_ok = broker_check(cfg.kafka.bootstrap_servers, cfg.ops.broker_check_timeout_s)
        observer = WorkerMetrics(metrics, source, lag_interval_s=cfg.ops.lag_interval_s,  # type: ignore[arg-type]
                                 broker_ok=broker_ok)
        watch = (observer, *observers)
        ops = start_ops_server(observer, cfg.ops.metrics_port, cfg.ops.metrics_host, broker_ok,
                               cfg.ops.liveness_timeout_s)
    worker = Worker(cfg, source, sink, models,
                    device=device or cfg.model.device, clock=clock, stages=stages, observers=watch,
                    model_check_interval_s=model_check_interval_s, on_event=on_event, changelog=changelog)
    return App(worker, metrics, retraining, ops)


@dataclass
class TrainerApp:
    """The fleet's trainer: the normal windows every worker sends fill one reservoir; the scheduler retrains on it
    and publishes. :meth:`run` blocks until :meth:`stop`. ``ops`` serves its ``/metrics`` (the retrain counters),
    ``/healthz`` (the feed loop turns) and ``/readyz`` (caught up with the topic, broker reachable)."""

    feed: Any  # aestream.kafka.normal_windows.NormalWindowsFeed
    reservoir: Reservoir
    retraining: Retraining
    ops: OpsServer | None = None

    def __post_init__(self) -> None:
        import threading

        self._stop = threading.Event()
        self.caught_up = False
        self.last_turn = time.monotonic()
        self.misfits: set[tuple[int, ...]] = set()  # shapes of windows skipped (said once each)

    def catch_up(self, timeout_s: float = 300.0) -> int:
        """Read what the topic held when the trainer started (the reservoir's state); returns the windows read.
        After ``timeout_s`` the trainer goes on (retraining on schedule, reading the rest on the way) and says so."""
        n, deadline = 0, time.monotonic() + timeout_s
        while not self.feed.caught_up() and not self._stop.is_set():
            if time.monotonic() >= deadline:
                log.warning("trainer: %d windows read back from %s in %g s, not all it held at start: retraining "
                            "starts on schedule with what the reservoir has, and the rest is read on the way", n,
                            self.feed.topic, timeout_s)
                break
            n += self._take(200)
        self.caught_up = True
        return n

    def run(self) -> None:
        try:
            n = self.catch_up()
            log.info("trainer: %d windows read back from %s, %d in the reservoir; retraining on schedule", n,
                     self.feed.topic, len(self.reservoir))
            self.retraining.start()
            while not self._stop.is_set():
                self._take(500)
        finally:
            self.retraining.close()  # kills a training in flight
            self.feed.close()
            if self.ops is not None:
                self.ops.stop()

    def run_now(self) -> RetrainOutcome:
        """Catch up, then one retrain in the calling thread (``aestream retrain`` in a fleet)."""
        try:
            self.catch_up()
            return self.retraining.run_now()
        finally:
            self.feed.close()
            if self.ops is not None:
                self.ops.stop()

    def stop(self) -> None:
        self._stop.set()

    def _take(self, timeout_ms: int) -> int:
        n = 0
        shape = (self.reservoir.window_size, self.reservoir.n_channels)
        for sensor, end_ms, values in self.feed.poll(timeout_ms):
            if values.shape == shape:
                self.reservoir.add(sensor, end_ms, values)
                n += 1
            elif values.shape not in self.misfits:
                self.misfits.add(values.shape)
                log.warning("trainer: skipping the normal windows of %s readings x %s channels (sensor %s and any "
                            "like it): this trainer's [stream] makes %s x %s (stream.window_size, stream.channels); "
                            "give it the workers' [stream]", *values.shape, sensor, *shape)
        self.last_turn = time.monotonic()
        return n


def build_trainer(cfg: Config, *, trainer: Trainer = train_bundle_from_windows,
                  on_outcome: Callable[[RetrainOutcome], None] | None = None, serve: bool = True) -> TrainerApp:
    """The fleet's trainer (``fleet.retrain_in = "trainer"``): reads ``<group_id>-normal-windows``, publishes to the
    configured store. Run exactly one: it is the only publisher. ``serve=False``: no endpoints (``aestream retrain``,
    once, maybe beside the running trainer and its port)."""
    from aestream.kafka.normal_windows import NormalWindowsFeed

    check_config(cfg)
    check_device(cfg.model.device)
    if cfg.fleet.retrain_in != "trainer":
        raise ConfigError(f'config key fleet.retrain_in = "{cfg.fleet.retrain_in}" makes each worker retrain on '
                          'its own: set fleet.retrain_in = "trainer" (and retrain.enabled = true in the workers) '
                          "to run one trainer for the fleet")
    r, o = cfg.retrain, cfg.ops
    if o.metrics_enabled and serve:  # a port in use fails before the feed's bootstrap, not after it
        check_port(o.metrics_host, o.trainer_metrics_port, "ops.trainer_metrics_port")
    reservoir = Reservoir(r.n_reservoir_windows, cfg.stream.window_size, len(cfg.stream.channels),
                          half_life_s=r.half_life_s, max_age_s=r.max_age_s, seed=cfg.model.seed)
    metrics = RetrainMetrics()  # a worker's gauges here would read as a worker without a model

    def outcome(o: RetrainOutcome) -> None:
        metrics.retrain(o.status, o.seconds)
        if on_outcome is not None:
            on_outcome(o)

    retrainer = Retrainer(cfg, reservoir, open_model_store(cfg), trainer=trainer, on_outcome=outcome)
    feed = NormalWindowsFeed(cfg.kafka, normal_windows_topic(cfg), r.max_age_s)
    app = TrainerApp(feed, reservoir, schedule(retrainer))
    if o.metrics_enabled and serve:
        broker_ok = broker_check(cfg.kafka.bootstrap_servers, o.broker_check_timeout_s)

        def alive() -> dict[str, Any]:  # the feed loop turns at least every poll (500 ms) between trainings
            since = round(time.monotonic() - app.last_turn, 3)
            return {"alive": not o.liveness_timeout_s or since <= o.liveness_timeout_s, "seconds_since_turn": since}

        app.ops = OpsServer(o.trainer_metrics_port, metrics, lambda: {"caught_up": app.caught_up,
                                                              "broker_reachable": broker_ok()},
                            host=o.metrics_host, liveness=alive, key="ops.trainer_metrics_port").start()
    return app


def check_config(cfg: Config) -> None:
    """The checks that parsing the config leaves to the parts that read those tables (the alert bands, sinks
    and routes; the retraining schedule): :func:`build_app` and :func:`build_trainer` run them before any client
    connects, so a wrong value fails at start with its key and fix, not after a broker's timeout."""
    k = cfg.kafka
    taken = {k.output_topic: "kafka.output_topic", k.dead_letter_topic: "kafka.dead_letter_topic",
             changelog_topic(cfg): "the baselines changelog", changelog_topic(cfg, "alerts"): "the alerts changelog",
             models_topic(cfg): "the models topic", normal_windows_topic(cfg): "the normal-windows topic",
             **{t: f"streams.{n}" for n in ("latent_topic", "denoised_topic") if (t := getattr(cfg.streams, n))}}
    check_alerts(cfg.alerts, cfg.stream.channels, k.input_topics, taken)
    make_trigger(cfg.retrain)
    check_kafka(cfg.kafka)


def check_kafka(k: KafkaConfig) -> None:
    """What the Kafka clients need that parsing the config leaves out (the TLS files, the confluent package,
    Kerberos support): every command that opens a client runs it first, so a wrong value fails with its key and
    fix, not after the bootstrap's timeout with a message about the brokers."""
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(k, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"config key kafka.{key} = {path!r} is invalid: no such file; give the PEM file's path, "
                              'or "" for none')
    if k.client == "confluent" and importlib.util.find_spec("confluent_kafka") is None:
        raise ConfigError('config key kafka.client = "confluent" needs the confluent-kafka package: '
                          "pip install 'aestream[confluent]', or use \"kafka-python\"")
    if k.sasl_mechanism == "GSSAPI":
        _check_kerberos(k.client)


def check_device(device: str, key: str = "config key model.device") -> None:
    """Fail with the setting and the fix when torch cannot put a tensor on ``device`` here (no GPU, no driver, a
    GPU index beyond the host's, a name torch does not know): not later, as a model bundle that will not load."""
    try:
        torch.empty(0, device=resolve_device(device))
    except Exception as e:  # RuntimeError, AssertionError (a CPU-only torch), torch's AcceleratorError
        reason = first_line(e)
        raise ConfigError(f"{key} = {device!r} cannot be used on this host ({reason}): use \"cpu\", or \"auto\" "
                          "(CUDA when a GPU is visible)") from None


def _check_kerberos(client: str) -> None:
    """GSSAPI (Kerberos) needs what neither client brings itself: the gssapi package for kafka-python, a
    librdkafka built with Cyrus SASL for confluent (PyPI's wheels are not)."""
    if client == "kafka-python" and importlib.util.find_spec("gssapi") is None:
        raise ConfigError('config key kafka.sasl_mechanism = "GSSAPI" needs the gssapi package with kafka-python: '
                          "pip install gssapi (and the system's Kerberos libraries)")
    if client == "confluent":
        from aestream.kafka.confluent import missing_feature

        why = missing_feature("sasl_gssapi")
        if why is not None:
            raise ConfigError('config key kafka.sasl_mechanism = "GSSAPI" is not in this confluent-kafka\'s '
                              f'librdkafka ({why}): use kafka.client = "kafka-python" with the gssapi package, or a '
                              "librdkafka built with Cyrus SASL")


def open_model_store(cfg: Config) -> ModelStoreLike:
    """The store ``fleet.models`` names: ``paths.model_dir``, or the models topic (which needs the signing key)."""
    key = cfg.fleet.model_key.encode() or None
    if cfg.fleet.models == "directory":
        return ModelStore(cfg.paths.model_dir, key=key)
    check_kafka(cfg.kafka)
    if key is None:
        raise ConfigError('config key fleet.models = "kafka" needs the key that signs and checks model bundles: '
                          "set AESTREAM_MODEL_KEY to the same secret in the workers and the trainer (e.g. the output "
                          "of `openssl rand -hex 32`)")
    from aestream.kafka.models_topic import KafkaModelStore

    return KafkaModelStore(cfg.kafka, models_topic(cfg), key)


def models_topic(cfg: Config) -> str:
    """The compacted topic the fleet's models are served from.

    >>> models_topic(Config())
    'aestream-models'
    """
    return f"{cfg.kafka.group_id}-models"


def normal_windows_topic(cfg: Config) -> str:
    """The topic workers send sampled normal windows to, for the fleet's trainer.

    >>> normal_windows_topic(Config())
    'aestream-normal-windows'
    """
    return f"{cfg.kafka.group_id}-normal-windows"


def changelog_topic(cfg: Config, state: str = "baselines") -> str:
    """The compacted topic that keeps one kind of state of the group's input partitions: the sensors'
    ``baselines``, or their ``alerts`` (episodes, cooldowns, silence).

    >>> changelog_topic(Config()), changelog_topic(Config(), "alerts")
    ('aestream-baselines-changelog', 'aestream-alerts-changelog')
    """
    return f"{cfg.kafka.group_id}-{state}-changelog"


def _stages(cfg: Config, metrics: Metrics, bundle: Callable[[], Any], alerts_changelog: Changelog | None
            ) -> list[Stage]:
    """The optional stages the config asks for: alert routing, the denoised and latent streams."""
    stages: list[Stage] = []
    alerts = build_alert_stage(cfg, on_give_up=metrics.webhook_failure, on_event=metrics.alert_event,
                               changelog=alerts_changelog)
    if alerts is not None:
        metrics.webhook_sinks(alerts.webhooks)
        stages.append(alerts)
    s = cfg.streams
    if s.denoised_topic or s.latent_topic:
        stages.append(StreamsStage(bundle, cfg.stream.channels, s.denoised_topic, s.latent_topic,
                                   s.denoise_anomalies, s.latent_residual_step_std))
    return stages


class _Null:
    """A source, sink and model source that do nothing (the doctest above)."""

    def current(self) -> None:
        return None
