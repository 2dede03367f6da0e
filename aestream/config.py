"""Configuration: ``config.toml`` parsed once into frozen dataclasses, one per section.

Every key is checked against its dataclass field: an unknown key, or a value of the wrong type, raises
:class:`~aestream.errors.ConfigError` naming the key, the value and the fix. Secrets may come from the
environment (``AESTREAM_KAFKA_SASL_PASSWORD``, ``AESTREAM_KAFKA_SSL_PASSWORD``, the bundles' signing key
``AESTREAM_MODEL_KEY``) and never appear in ``repr``;
``AESTREAM_KAFKA_BOOTSTRAP_SERVERS`` (comma-separated) overrides ``kafka.bootstrap_servers`` (containers).
This is the only module that reads the environment.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import sys
import threading
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aestream.errors import ConfigError
from aestream.models import Family

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "AlertsConfig",
    "BaselinesConfig",
    "Config",
    "FleetConfig",
    "KafkaConfig",
    "ModelConfig",
    "OpsConfig",
    "PathsConfig",
    "RetrainConfig",
    "StreamConfig",
    "StreamsConfig",
    "ThresholdConfig",
    "load_config",
    "parse_config",
]

# The SKAB water-circulation testbed (8 sensors at ~1 Hz), as the shipped config.toml describes it: every default
# below is the value config.toml shows, so a key left out of a config file takes what the shipped file says.
DEFAULT_CHANNELS = ("Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature", "Thermocouple",
                    "Voltage", "Volume Flow RateRMS")
BOOTSTRAP_ENV = "AESTREAM_KAFKA_BOOTSTRAP_SERVERS"
MIN_RESIDUAL_STEP_STD, MAX_RESIDUAL_STEP_STD = 1e-6, 1e6  # streams.latent_residual_step_std (float32 in records)
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")  # what Kafka takes for a topic's name ("." and ".." aside)
TOPIC_FIX = "a Kafka topic's name uses letters, digits, '.', '_' and '-' only (at most 249): name another topic"
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(\d{1,5})")  # "kafka:9092", "[::1]:9092"
SECRET_ENV = {
    "sasl_password": "AESTREAM_KAFKA_SASL_PASSWORD",
    "ssl_password": "AESTREAM_KAFKA_SSL_PASSWORD",
}
MODEL_KEY_ENV = "AESTREAM_MODEL_KEY"
# what the clients authenticate with from the settings aestream passes (OAUTHBEARER needs a token provider or OIDC
# settings, which it does not pass)
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI")
# the largest values both clients take: librdkafka's ranges (kafka-python sends them as the broker's int32 fields,
# and confluent-kafka's consume() takes at most 1M messages)
MAX_CLIENT_MS = {"session_timeout_ms": 3_600_000, "heartbeat_interval_ms": 3_600_000,
                 "max_poll_interval_ms": 86_400_000}
MAX_POLL_RECORDS = 1_000_000


@dataclass(frozen=True)
class KafkaConfig:
    """Where readings come from and where events, dead letters and models go."""

    bootstrap_servers: tuple[str, ...] = ("127.0.0.1:19092",)
    client: Literal["kafka-python", "confluent"] = "kafka-python"
    group_id: str = "aestream"
    client_id: str = "aestream"
    input_topics: tuple[str, ...] = ("readings",)
    output_topic: str = "anomalies"
    dead_letter_topic: str = "aestream-dead-letter"
    dead_letter_max_bytes: int = 900_000
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed"
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    max_poll_records: int = 2_000
    poll_timeout_ms: int = 200
    commit_interval_ms: int = 100
    rebuild_lookback_messages: int = 5_000
    fetch_process: bool = False
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_password: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        _check_choices(self, "kafka")
        servers = self.bootstrap_servers
        _require(len(servers) > 0 and all(map(_host_port, servers)),
                 "kafka.bootstrap_servers", list(self.bootstrap_servers),
                 'list the brokers as "host:port" strings, e.g. ["broker1:9092", "broker2:9092"] (the port too: '
                 "the readiness check and the lag metric connect to it)")
        _check_names(self, "kafka", "group_id", "client_id", "output_topic", "dead_letter_topic")
        _require(all(t.strip() for t in self.input_topics), "kafka.input_topics", list(self.input_topics),
                 "name each topic (an empty name is no topic)")
        for key, topics in (("input_topics", self.input_topics), ("output_topic", (self.output_topic,)),
                            ("dead_letter_topic", (self.dead_letter_topic,))):
            bad = [t for t in topics if not is_topic_name(t)]
            _require(not bad, f"kafka.{key}", bad[0] if bad else "", TOPIC_FIX)
        _require(is_topic_name(f"{self.group_id}-baselines-changelog"), "kafka.group_id", self.group_id,
                 "it names the worker's own topics (<group_id>-baselines-changelog, -alerts-changelog, -models, "
                 "-normal-windows): use letters, digits, '.', '_' and '-' only (at most 229)")
        for name in ("session_timeout_ms", "heartbeat_interval_ms", "max_poll_interval_ms", "max_poll_records",
                     "poll_timeout_ms"):
            _require(getattr(self, name) > 0, f"kafka.{name}", getattr(self, name), "use a positive number")
        for name, most in MAX_CLIENT_MS.items():
            _require(getattr(self, name) <= most, f"kafka.{name}", getattr(self, name),
                     f"use at most {most} ms, the most the Kafka clients take")
        _require(self.max_poll_records <= MAX_POLL_RECORDS, "kafka.max_poll_records", self.max_poll_records,
                 f"use at most {MAX_POLL_RECORDS} (the most confluent-kafka's consume takes)")
        _require(self.heartbeat_interval_ms < self.session_timeout_ms, "kafka.heartbeat_interval_ms",
                 self.heartbeat_interval_ms, f"use less than kafka.session_timeout_ms ({self.session_timeout_ms}), "
                 "typically a third of it")
        _require(self.max_poll_interval_ms >= self.session_timeout_ms, "kafka.max_poll_interval_ms",
                 self.max_poll_interval_ms, f"use at least kafka.session_timeout_ms ({self.session_timeout_ms}): the "
                 "group would drop a member between two polls before it missed a heartbeat (librdkafka refuses it)")
        _require(self.rebuild_lookback_messages >= 0, "kafka.rebuild_lookback_messages",
                 self.rebuild_lookback_messages, "use 0 (no rebuild) or a positive number of messages")
        _require(len(self.input_topics) > 0, "kafka.input_topics", self.input_topics, "name at least one topic")
        for key in ("output_topic", "dead_letter_topic"):
            _require(getattr(self, key) not in self.input_topics, f"kafka.{key}", getattr(self, key),
                     "it is one of kafka.input_topics, so the worker would read its own messages back (a dead letter "
                     "is dead-lettered again, forever): name another topic")
        _require(self.dead_letter_topic != self.output_topic, "kafka.dead_letter_topic", self.dead_letter_topic,
                 "it is also kafka.output_topic, whose consumers would get malformed input among the anomaly "
                 "events: name another topic")
        _require(self.commit_interval_ms >= 0, "kafka.commit_interval_ms", self.commit_interval_ms,
                 "use 0 (after every poll) or a positive number of ms")
        sasl = self.security_protocol.startswith("SASL")
        _require(self.sasl_mechanism != "OAUTHBEARER", "kafka.sasl_mechanism", self.sasl_mechanism,
                 "aestream passes no OAuth settings (token provider, OIDC endpoint) to its Kafka clients, so they "
                 "could not authenticate: use SCRAM-SHA-512 (or SCRAM-SHA-256, PLAIN) over SASL_SSL")
        _require(self.sasl_mechanism in (SASL_MECHANISMS if sasl else ("", *SASL_MECHANISMS)), "kafka.sasl_mechanism",
                 self.sasl_mechanism, f"use one of {', '.join(SASL_MECHANISMS)}" + ("" if sasl else ', or ""'))
        _require(self.dead_letter_max_bytes > 0, "kafka.dead_letter_max_bytes", self.dead_letter_max_bytes,
                 "use a positive number of bytes, below the dead-letter topic's max.message.bytes")
        _require(not sasl or self.sasl_mechanism == "GSSAPI" or bool(self.sasl_username.strip()),
                 "kafka.sasl_username", self.sasl_username,
                 f"{self.sasl_mechanism or 'SASL'} over {self.security_protocol} needs the user to log in as")


@dataclass(frozen=True)
class StreamConfig:
    """How each sensor's readings are cut into windows."""

    channels: tuple[str, ...] = DEFAULT_CHANNELS
    window_size: int = 40
    stride: int = 1
    stride_ms: int = 0
    max_gap_ms: int = 10_000
    max_message_bytes: int = 1_000_000
    max_readings_per_message: int = 10_000
    sensor_ttl_s: float = 3_600.0
    max_future_ms: int = 300_000
    n_late_report: int = 100

    def __post_init__(self) -> None:
        _check_finite(self, "stream")
        _require(len(self.channels) > 0, "stream.channels", self.channels, "list at least one channel")
        _require(len(set(self.channels)) == len(self.channels), "stream.channels", self.channels,
                 "remove the duplicate channel names")
        _require(self.window_size >= 2, "stream.window_size", self.window_size, "use 2 or more readings")
        _require(1 <= self.stride <= self.window_size, "stream.stride", self.stride,
                 f"use a value from 1 to window_size ({self.window_size})")
        _require(self.max_gap_ms > 0, "stream.max_gap_ms", self.max_gap_ms, "use a positive number of ms")
        for name in ("max_message_bytes", "max_readings_per_message", "sensor_ttl_s"):
            _require(getattr(self, name) > 0, f"stream.{name}", getattr(self, name), "use a positive number")
        _require(self.stride_ms >= 0, "stream.stride_ms", self.stride_ms, "use 0 (off) or a positive number of ms")
        _require(self.stride_ms == 0 or self.stride == 1, "stream.stride", self.stride,
                 f"use 1 with stream.stride_ms = {self.stride_ms} (the grid replaces the count), or stride_ms = 0")
        _require(self.max_future_ms >= 0, "stream.max_future_ms", self.max_future_ms,
                 "use 0 (off) or a positive number of ms, e.g. 300000 (5 minutes)")
        _require(self.n_late_report >= 0, "stream.n_late_report", self.n_late_report,
                 "use 0 (never) or a positive number of readings")


@dataclass(frozen=True)
class ModelConfig:
    """Which autoencoder to train and how. Family-specific settings live in sub-tables."""

    family: Family = "denoising"
    latent_size: int = 8
    hidden_size: int = 64
    device: str = "auto"
    epochs: int = 60
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    validation_fraction: float = 0.3
    patience: int = 8
    seed: int = 0
    torch_threads: int = 1
    detrend_channels: tuple[str, ...] = ("Temperature", "Thermocouple")
    input_smoothing: int = 5
    score_reduce: Literal["mean", "max"] = "mean"
    sparse: dict[str, Any] = field(default_factory=lambda: {"penalty": "l1", "l1": 0.001, "rho": 0.05, "beta": 0.01,
                                                            "dropout": 0.0})
    contractive: dict[str, Any] = field(default_factory=lambda: {"lam": 0.0001})
    denoising: dict[str, Any] = field(default_factory=lambda: {"noise_std": 0.3, "mask_prob": 0.1})
    conv: dict[str, Any] = field(default_factory=lambda: {"filters": 32, "kernel_size": 7, "dropout": 0.0})
    vanilla: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_choices(self, "model")
        _check_finite(self, "model")
        _require(self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device) is not None,
                 "model.device", self.device, 'use "auto", "cpu", "cuda" or "cuda:N" (a GPU\'s index)')
        _require(0.0 < self.validation_fraction < 1.0, "model.validation_fraction", self.validation_fraction,
                 "use a fraction between 0 and 1")
        for name in ("latent_size", "hidden_size", "epochs", "batch_size", "input_smoothing", "learning_rate"):
            _require(getattr(self, name) > 0, f"model.{name}", getattr(self, name), "use a positive number")
        _require(self.patience >= 1, "model.patience", self.patience, "use 1 or more epochs without improvement")
        for name in ("weight_decay", "seed", "torch_threads"):
            _require(getattr(self, name) >= 0, f"model.{name}", getattr(self, name), "use 0 or more")
        for family, params in _FAMILY_PARAMS.items():
            _check_table(getattr(self, family), params, f"model.{family}")
        sparse = self.sparse
        _require(self.family != "sparse" or sparse.get("penalty") != "none" or sparse.get("dropout", 0.0) > 0,
                 "model.sparse.dropout", sparse.get("dropout", 0.0),
                 'use a share above 0 with penalty = "none", whose sparsity is that dropout alone (with 0 the model '
                 'is family "vanilla")')

    def family_params(self) -> dict[str, Any]:
        """The hyperparameters of the configured family's own sub-table."""
        return dict(getattr(self, self.family))


@dataclass(frozen=True)
class ThresholdConfig:
    """How the alarm threshold is calibrated from validation scores, and the k-of-n rule."""

    method: Literal["quantile", "pot"] = "quantile"
    quantile: float = 0.999
    factor: float = 3.0
    target_far: float = 0.001
    pot_initial_quantile: float = 0.98
    smoothing: int = 1
    k: int = 1
    n: int = 20
    critical_ratio: float = 2.0
    sensors: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_choices(self, "threshold")
        _check_finite(self, "threshold")
        for glob, f in self.sensors.items():
            _require(isinstance(f, (int, float)) and not isinstance(f, bool) and f > 0, f"threshold.sensors.{glob}",
                     f, "use a positive factor of the calibrated threshold, e.g. 1.5")
        _require(0.0 < self.quantile < 1.0, "threshold.quantile", self.quantile, "use a value between 0 and 1")
        _require(self.factor > 0, "threshold.factor", self.factor,
                 "use a positive factor of the calibrated quantile, e.g. 2.5 (1 = the quantile itself)")
        _require(0.0 < self.pot_initial_quantile < 1.0, "threshold.pot_initial_quantile", self.pot_initial_quantile,
                 "use a quantile between 0 and 1 above which the tail is fitted, e.g. 0.98")
        _require(self.critical_ratio >= 1.0, "threshold.critical_ratio", self.critical_ratio,
                 "use 1 or more (the score/threshold ratio from which an anomaly is critical)")
        _require(self.n >= 1, "threshold.n", self.n, "use 1 or more windows")
        _require(0.0 < self.target_far < 1.0, "threshold.target_far", self.target_far,
                 "use a value between 0 and 1")
        _require(self.smoothing >= 1, "threshold.smoothing", self.smoothing, "use 1 (off) or more windows")
        _require(1 <= self.k <= self.n, "threshold.k", self.k, f"use a value from 1 to n ({self.n})")


@dataclass(frozen=True)
class BaselinesConfig:
    """Per-sensor baselines, learned from each sensor's first ``n_readings`` readings: ``mode = "shared"`` keeps
    the shared model and gives each sensor its own input scaling, error scaling and threshold; ``"finetune"`` also
    gives it its own model, the shared one fine-tuned on those readings (between the worker's steps, in slices of at
    most ``finetune_slice_ms`` while records wait, at most ``finetune_queue`` waiting, unless
    ``finetune_blocking``); ``"off"`` judges every sensor by the shared model's
    own scaling and threshold."""

    mode: Literal["finetune", "shared", "off"] = "finetune"
    n_readings: int = 400
    min_std_fraction: float = 0.1
    n_refresh_windows: int = 200
    finetune_epochs: int = 0
    finetune_queue: int = 64
    finetune_slice_ms: float = 1.0
    finetune_blocking: bool = False

    def __post_init__(self) -> None:
        _check_choices(self, "baselines")
        _check_finite(self, "baselines")
        _require(self.n_readings >= 2, "baselines.n_readings", self.n_readings,
                 "use at least 2 readings (and at least 3 × stream.window_size, checked with [stream])")
        _require(0.0 < self.min_std_fraction <= 1.0, "baselines.min_std_fraction", self.min_std_fraction,
                 "use a fraction above 0 and at most 1 of the model's own channel standard deviation")
        _require(self.n_refresh_windows >= 1, "baselines.n_refresh_windows", self.n_refresh_windows,
                 "use 1 or more windows")
        _require(self.finetune_epochs >= 0, "baselines.finetune_epochs", self.finetune_epochs,
                 "use 0 (model.epochs) or more")
        _require(self.finetune_queue >= 1, "baselines.finetune_queue", self.finetune_queue, "use 1 or more")
        _require(self.finetune_slice_ms > 0, "baselines.finetune_slice_ms", self.finetune_slice_ms,
                 "use a positive number of milliseconds (1: a reading waits at most ~1 ms, or one optimiser step, "
                 "more for a fine-tune)")


@dataclass(frozen=True)
class AlertsConfig:
    """Alert routing: anomaly events become episodes (open/update/resolve) routed to sinks.

    ``bands`` maps a severity name to the lowest score/threshold ratio it covers; ``sinks`` holds named
    ``[alerts.sinks.NAME]`` tables (type topic, webhook or log); ``routes`` is the ``[[alerts.routes]]`` list,
    checked in order (``match`` = "first" or "all"); ``tags`` maps a sensor glob to tags routes can match on.
    """

    enabled: bool = False
    topic: str = "alerts"
    dead_letter_topic: str = ""
    bands: dict[str, Any] = field(default_factory=lambda: {"warning": 1.0, "critical": 2.0})
    n_resolve_windows: int = 5
    cooldown_ms: int = 300_000
    silent_after_s: float = 0.0
    silent_lag_ms: int = 0
    match: Literal["first", "all"] = "first"
    default_sinks: tuple[str, ...] = ("topic",)
    sinks: dict[str, Any] = field(default_factory=dict)
    routes: tuple[dict[str, Any], ...] = ()
    tags: dict[str, Any] = field(default_factory=dict)
    state_file: str = "alerts-state.json"
    persist_interval_s: float = 1.0

    def __post_init__(self) -> None:
        _check_choices(self, "alerts")
        _check_finite(self, "alerts")
        _check_names(self, "alerts", "topic", "state_file")
        for key in ("topic", "dead_letter_topic"):
            topic = getattr(self, key)
            _require(not topic or is_topic_name(topic), f"alerts.{key}", topic, TOPIC_FIX)
        _require(len(set(self.default_sinks)) == len(self.default_sinks), "alerts.default_sinks",
                 list(self.default_sinks), "name each sink once (a sink named twice gets every event twice)")
        _require(self.n_resolve_windows >= 1, "alerts.n_resolve_windows", self.n_resolve_windows,
                 "use 1 or more windows")
        for name in ("cooldown_ms", "silent_after_s", "silent_lag_ms", "persist_interval_s"):
            _require(getattr(self, name) >= 0, f"alerts.{name}", getattr(self, name), "use 0 (off) or more")


MAX_INTERVAL_S = 10 * 365 * 86_400.0  # retrain.interval_s: APScheduler's dates overflow past a few thousand years


@dataclass(frozen=True)
class RetrainConfig:
    """Scheduled retraining on recent normal data: the reservoir's rules, the schedule, the gate."""

    enabled: bool = False
    schedule: Literal["interval", "cron"] = "interval"
    interval_s: float = 3_600.0
    cron: str = "0 3 * * *"
    family: Family | Literal[""] = ""
    epochs: int = 0
    n_reservoir_windows: int = 20_000
    max_age_s: float = 7 * 86_400.0
    half_life_s: float = 86_400.0
    guard_s: float = 300.0
    regime_change_after_s: float = 1_800.0
    sample_interval_s: float = 300.0
    save_every_s: float = 60.0
    n_min_windows: int = 500
    n_min_new_windows: int = 100
    holdout_fraction: float = 0.2
    calibration_fraction: float = 0.2
    gate_tolerance: float = 0.05
    gate_max_far: float = 0.01
    gate_recall_tolerance: float = 0.05
    timeout_s: float = 1_800.0
    torch_threads: int = 1
    isolation: Literal["process", "thread"] = "process"

    def __post_init__(self) -> None:
        _check_choices(self, "retrain")
        _check_finite(self, "retrain")
        for name in ("interval_s", "max_age_s", "half_life_s", "timeout_s", "n_reservoir_windows",
                     "n_min_windows", "save_every_s"):
            _require(getattr(self, name) > 0, f"retrain.{name}", getattr(self, name), "use a positive number")
        _require(self.regime_change_after_s > 0, "retrain.regime_change_after_s", self.regime_change_after_s,
                 "use a duration above the longest fault you would leave unattended (0 is not off: every alarm "
                 "would be learned as normal at once)")
        for name in ("guard_s", "sample_interval_s", "gate_tolerance", "epochs",
                     "n_min_new_windows", "torch_threads"):
            _require(getattr(self, name) >= 0, f"retrain.{name}", getattr(self, name), "use 0 or more")
        for name in ("holdout_fraction", "calibration_fraction"):
            _require(0.0 < getattr(self, name) < 0.8, f"retrain.{name}", getattr(self, name),
                     "use a share above 0 (holdout_fraction and calibration_fraction sum below 0.8)")
        _require(self.holdout_fraction + self.calibration_fraction < 0.8, "retrain.holdout_fraction",
                 self.holdout_fraction, "use holdout_fraction and calibration_fraction above 0 that sum below 0.8")
        _require(self.n_min_windows <= self.n_reservoir_windows, "retrain.n_min_windows", self.n_min_windows,
                 f"use at most retrain.n_reservoir_windows ({self.n_reservoir_windows}), or no retrain ever runs")
        _require(self.interval_s <= MAX_INTERVAL_S, "retrain.interval_s", self.interval_s,
                 f"use at most {MAX_INTERVAL_S:.0f} s (ten years; the scheduler's dates end); retrain.enabled = "
                 "false turns retraining off")
        _require(0.0 < self.gate_max_far < 1.0, "retrain.gate_max_far", self.gate_max_far,
                 "use a rate between 0 and 1")
        _require(0.0 <= self.gate_recall_tolerance <= 1.0, "retrain.gate_recall_tolerance",
                 self.gate_recall_tolerance, "use a share from 0 to 1, e.g. 0.05")


@dataclass(frozen=True)
class OpsConfig:
    """Operations surface: the metrics and health endpoints (``/metrics``, ``/healthz``, ``/readyz``) and logs.

    ``metrics_port = 0`` picks a free port (tests); ``metrics_enabled = false`` serves nothing. ``/healthz`` fails
    once the consume loop has not completed a step for ``liveness_timeout_s`` (0: never).
    """

    metrics_enabled: bool = True
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9108
    trainer_metrics_port: int = 9109
    lag_interval_s: float = 5.0
    broker_check_timeout_s: float = 1.0
    liveness_timeout_s: float = 120.0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False

    def __post_init__(self) -> None:
        _check_finite(self, "ops")
        _require(0 <= self.trainer_metrics_port <= 65535, "ops.trainer_metrics_port", self.trainer_metrics_port,
                 "use a TCP port from 1 to 65535 (0 = any free port)")
        _require(0 <= self.metrics_port <= 65535, "ops.metrics_port", self.metrics_port,
                 "use a TCP port from 1 to 65535 (0 = any free port)")
        _require(self.lag_interval_s > 0, "ops.lag_interval_s", self.lag_interval_s, "use a positive number of s")
        _require(0 < self.broker_check_timeout_s <= threading.TIMEOUT_MAX, "ops.broker_check_timeout_s",
                 self.broker_check_timeout_s, "use a positive number of s, e.g. 1 (below the readiness probe's "
                 "timeout)")
        _require(self.liveness_timeout_s >= 0, "ops.liveness_timeout_s", self.liveness_timeout_s,
                 "use 0 (off) or a positive number of s, above the longest step (poll, score, flush, commit)")
        _check_choices(self, "ops")


@dataclass(frozen=True)
class StreamsConfig:
    """Optional output streams beyond alerts: the denoised signal and the latent codes.

    ``latent_residual_step_std > 0`` adds each window's quantised residual to its latent record (``AEL3``): a step
    of that many training standard deviations per channel, so every decoded value is within half a step.
    """

    denoised_topic: str = ""
    latent_topic: str = ""
    denoise_anomalies: bool = False
    latent_residual_step_std: float = 0.0

    def __post_init__(self) -> None:
        step = self.latent_residual_step_std
        _require(step == 0 or MIN_RESIDUAL_STEP_STD <= step <= MAX_RESIDUAL_STEP_STD,
                 "streams.latent_residual_step_std", step,
                 f"use 0 (off) or a step of {MIN_RESIDUAL_STEP_STD:g} to {MAX_RESIDUAL_STEP_STD:g} training "
                 f"standard deviations of each channel, e.g. 0.05")


@dataclass(frozen=True)
class FleetConfig:
    """How several worker processes share models and training (README "Scaling out").

    ``models``: ``"directory"`` serves from ``paths.model_dir`` (one process, or a volume all share); ``"kafka"``
    from the compacted topic ``<group_id>-models``. ``retrain_in``: ``"worker"`` retrains inside ``aestream run`` on
    its own partitions' windows (one worker); ``"trainer"`` has the workers send sampled normal windows to
    ``<group_id>-normal-windows`` for the one ``aestream trainer`` process, which trains for the whole fleet.
    ``model_key`` (from ``AESTREAM_MODEL_KEY`` only) signs and checks bundles; ``"kafka"`` requires it.
    """

    models: Literal["directory", "kafka"] = "directory"
    retrain_in: Literal["worker", "trainer"] = "worker"
    model_key: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        _check_choices(self, "fleet")


@dataclass(frozen=True)
class PathsConfig:
    """Where models and local state are kept."""

    model_dir: str = "var/models"
    state_dir: str = "var/state"

    def __post_init__(self) -> None:
        _check_names(self, "paths", "model_dir", "state_dir")


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    ops: OpsConfig = field(default_factory=OpsConfig)
    streams: StreamsConfig = field(default_factory=StreamsConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)

    def __post_init__(self) -> None:
        family = self.retrain.family
        if family and family != self.model.family:  # its model checked now, not at each retrain (all would fail)
            try:
                dataclasses.replace(self.model, family=family)
            except ConfigError as e:
                raise ConfigError(f"{e} (retrain.family = {family!r} trains with it)") from None

    def to_toml(self) -> str:
        """The whole configuration as ``config.toml`` text that :func:`load_config` reads back to an equal
        :class:`Config`; secrets are left out (they come from the environment).

        >>> cfg = Config().replace(threshold={"sensors": {"pump-*": 1.5}})
        >>> parse_config(tomllib.loads(cfg.to_toml())) == cfg
        True
        """
        lines: list[str] = []
        for section in dataclasses.fields(self):
            value = getattr(self, section.name)
            lines.append(f"[{section.name}]")
            lines += [f"{_toml_key(f.name)} = {_toml_value(getattr(value, f.name))}"
                      for f in dataclasses.fields(value) if f.repr]
        return "\n".join(lines) + "\n"

    def replace(self, **sections: Any) -> Config:
        """A copy with some sections' keys changed: ``cfg.replace(kafka={"group_id": "g"})``."""
        changed = {name: dataclasses.replace(getattr(self, name), **keys) for name, keys in sections.items()}
        return dataclasses.replace(self, **changed)


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() and key.isascii() else _toml_string(key)


def _toml_value(v: Any) -> str:
    """A TOML value: JSON's strings and numbers are TOML's; tables are written inline."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return _toml_string(v) if isinstance(v, str) else json.dumps(v)


def _toml_string(text: str) -> str:
    """A TOML basic string: JSON's, with a character beyond the BMP (an emoji) as itself (JSON's surrogate pair
    escapes are not TOML's) and DEL escaped (a control character to TOML, left as it is by JSON)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _require(ok: bool, key: str, value: object, fix: str) -> None:
    if not ok:
        raise ConfigError(f"config key {key} = {value!r} is invalid: {fix}")


def is_topic_name(value: str) -> bool:
    """Whether Kafka takes ``value`` as a topic's name."""
    return _TOPIC.fullmatch(value) is not None and value not in (".", "..")


def _check_names(section: Any, name: str, *keys: str) -> None:
    """The string ``keys`` of ``section`` (topics, ids, paths) are not empty: "" would name no topic, or the
    current directory."""
    defaults = {f.name: f.default for f in dataclasses.fields(section)}
    for key in keys:
        value = getattr(section, key)
        _require(bool(value.strip()), f"{name}.{key}", value,
                 f"give it a name, or leave the key out for the default {defaults[key]!r}")


def _check_finite(section: Any, name: str) -> None:
    """No float key of ``section`` is NaN or ±inf (TOML can write both)."""
    for key, hint in typing.get_type_hints(type(section)).items():
        value = getattr(section, key)
        if hint is float and isinstance(value, float):
            _require(math.isfinite(value), f"{name}.{key}", value, "use a finite number")


# The keys of each [model.FAMILY] table: (whole number?, in range?, the fix).
_FAMILY_PARAMS: dict[str, dict[str, tuple[bool, Callable[[Any], bool], str]]] = {
    "vanilla": {},
    "sparse": {
        "penalty": (False, lambda v: v in ("l1", "kl", "weights", "none"),
                    'use "l1" (on the code), "kl" (KL to rho), "weights" (L1 on the weights) or "none"'),
        "l1": (False, lambda v: v >= 0, "use a weight of 0 or more"),
        "rho": (False, lambda v: 0 < v < 1, "use a target activation between 0 and 1, e.g. 0.05"),
        "beta": (False, lambda v: v >= 0, "use a weight of 0 or more"),
        "dropout": (False, lambda v: 0 <= v < 1, "use a share from 0 up to (not including) 1"),
    },
    "contractive": {"lam": (False, lambda v: v >= 0, "use a weight of 0 or more")},
    "denoising": {
        "noise_std": (False, lambda v: v >= 0, "use a standard deviation of 0 or more"),
        "mask_prob": (False, lambda v: 0 <= v < 1, "use a share from 0 up to (not including) 1"),
    },
    "conv": {
        "filters": (True, lambda v: v > 0, "use a whole number of 1 or more"),
        "kernel_size": (True, lambda v: v > 0, "use a whole number of 1 or more (odd keeps the window centred)"),
        "dropout": (False, lambda v: 0 <= v < 1, "use a share from 0 up to (not including) 1"),
    },
}


def _check_table(table: dict[str, Any], params: dict[str, tuple[bool, Callable[[Any], bool], str]],
                 where: str) -> None:
    """A family's sub-table: known keys, of the right type, in range."""
    for key, value in table.items():
        at = f"{where}.{key}"
        if key not in params:
            raise ConfigError(_unknown_key(at, value, [f"{where}.{k}" for k in params]))
        whole, ok, fix = params[key]
        if isinstance(value, str) != (key == "penalty") or isinstance(value, bool) or (
                whole and not isinstance(value, int)) or (isinstance(value, float) and not math.isfinite(value)):
            _require(False, at, value, fix)
        _require(ok(value), at, value, fix)


def _choices(hint: Any) -> tuple[Any, ...]:
    """The values a ``Literal`` (or a union of them) allows; ``()`` for any other type.

    >>> _choices(Literal["a", "b"] | Literal[""]), _choices(int)
    (('a', 'b', ''), ())
    """
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(v for arg in typing.get_args(hint) for v in _choices(arg))
    return ()


def _use_one_of(allowed: tuple[Any, ...]) -> str:
    """
    >>> _use_one_of(("first", "all")), _use_one_of(("a", "b", "c"))
    ('use "first" or "all"', 'use "a", "b" or "c"')
    """
    quoted = [f'"{v}"' for v in allowed]
    return f"use {', '.join(quoted[:-1])} or {quoted[-1]}" if len(quoted) > 1 else f"use {quoted[0]}"


def _check_choices(section: Any, name: str) -> None:
    """Every ``Literal`` field of ``section`` holds one of its values (for configs built in code too)."""
    for key, hint in typing.get_type_hints(type(section)).items():
        allowed = _choices(hint)
        value = getattr(section, key)
        if allowed and value not in allowed:
            _require(False, f"{name}.{key}", value, _use_one_of(allowed))


def _host_port(server: str) -> bool:
    """Whether ``server`` is ``host:port`` with a port from 1 to 65535."""
    m = _HOST_PORT.fullmatch(server.strip())
    return m is not None and 1 <= int(m.group(2)) <= 65535


def load_config(path: str | os.PathLike[str] | None, environ: typing.Mapping[str, str] | None = None) -> Config:
    """Read and check a ``config.toml``; ``None`` gives the defaults (plus secrets from the environment)."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {p} not found: pass --config with an existing file") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {p} is not valid TOML ({e}): fix the syntax at that line") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {p} is not UTF-8 text ({e.reason} at byte {e.start}): save it as UTF-8, "
                              "as TOML requires") from None
        except OSError as e:  # a directory, no permission
            raise ConfigError(f"config file {p} cannot be read ({e.strerror}): pass --config with a readable "
                              "file") from None
    return parse_config(data, os.environ if environ is None else environ)


MIN_CALIBRATION_WINDOWS = 3  # baselines.n_readings: at least this many stream.window_size of readings


def parse_config(data: dict[str, Any], environ: typing.Mapping[str, str] | None = None) -> Config:
    """Build a :class:`Config` from a TOML-shaped dict, checking every key and type."""
    sections: dict[str, Any] = {}
    hints = typing.get_type_hints(Config)
    for name, value in data.items():
        if name not in hints:
            raise ConfigError(_unknown_key(name, value, list(hints)))
        if not isinstance(value, dict):
            raise ConfigError(f"config key {name} = {value!r} is invalid: it must be a table [{name}]")
        sections[name] = _build(hints[name], value, name)
    if "model_key" in data.get("fleet", {}):
        raise ConfigError(f"config key fleet.model_key is not read from a file (a signing secret): remove it and set "
                          f"{MODEL_KEY_ENV} in the environment of every worker and the trainer")
    kafka = sections.get("kafka", KafkaConfig())
    for key, var in SECRET_ENV.items():
        if environ and environ.get(var):
            kafka = dataclasses.replace(kafka, **{key: environ[var]})
    if environ and environ.get(BOOTSTRAP_ENV):
        servers = tuple(s.strip() for s in environ[BOOTSTRAP_ENV].split(",") if s.strip())
        if not servers or not all(map(_host_port, servers)):
            raise ConfigError(f"environment variable {BOOTSTRAP_ENV} = {environ[BOOTSTRAP_ENV]!r} is invalid: list "
                              'the brokers as host:port, comma-separated, e.g. "broker1:9092,broker2:9092" (ports '
                              "1 to 65535), or unset it")
        kafka = dataclasses.replace(kafka, bootstrap_servers=servers)
    sections["kafka"] = kafka
    if kafka.security_protocol.startswith("SASL") and kafka.sasl_mechanism != "GSSAPI" and not kafka.sasl_password:
        raise ConfigError(f"config key kafka.sasl_password is empty, and {kafka.sasl_mechanism} over "
                          f"{kafka.security_protocol} needs it: set {SECRET_ENV['sasl_password']} in the environment "
                          "(or kafka.sasl_password, in a file only its user can read)")
    if environ and environ.get(MODEL_KEY_ENV):
        sections["fleet"] = dataclasses.replace(sections.get("fleet", FleetConfig()), model_key=environ[MODEL_KEY_ENV])
    cfg = Config(**sections)
    unknown = [c for c in cfg.model.detrend_channels if c not in cfg.stream.channels]
    _require(not unknown, "model.detrend_channels", list(cfg.model.detrend_channels),
             f"{unknown} are not among stream.channels {list(cfg.stream.channels)}: name some of those, or [] for none")
    for key in ("denoised_topic", "latent_topic"):
        topic = getattr(cfg.streams, key)
        _require(not topic or is_topic_name(topic), f"streams.{key}", topic, TOPIC_FIX)
        _require(topic not in cfg.kafka.input_topics, f"streams.{key}", topic,
                 "it is one of kafka.input_topics, so the worker would read its own records back "
                 + ("as new readings" if key == "denoised_topic" else "(each a dead letter)") + ": name another topic")
        others = {"kafka.output_topic": cfg.kafka.output_topic, "kafka.dead_letter_topic": cfg.kafka.dead_letter_topic,
                  **({"alerts.topic": cfg.alerts.topic} if cfg.alerts.enabled else {}),
                  **({"streams.denoised_topic": cfg.streams.denoised_topic} if key == "latent_topic" else {})}
        clash = [name for name, other in others.items() if topic and other == topic]
        _require(not clash, f"streams.{key}", topic,
                 f"it is also {clash[0] if clash else ''}, whose consumers would get its "
                 + ("readings" if key == "denoised_topic" else "binary records") + " among theirs: name another topic")
    if cfg.streams.latent_topic:  # what one latent record can hold (aestream.outputs.streams)
        n_detrend = len(cfg.model.detrend_channels)
        _require(n_detrend <= 255, "model.detrend_channels", f"{n_detrend} channels",
                 "a latent record holds the levels of at most 255 detrended channels: detrend fewer, or leave "
                 'streams.latent_topic = ""')
        if cfg.streams.latent_residual_step_std > 0:
            n, w = len(cfg.stream.channels), cfg.stream.window_size
            _require(n <= 255 and w <= 65535, "streams.latent_residual_step_std", cfg.streams.latent_residual_step_std,
                     f"a latent record's residual holds at most 255 channels and 65535 readings, not {n} × {w}: use 0 "
                     "(records without a residual)")
    b, w = cfg.baselines, cfg.stream.window_size
    _require(b.mode == "off" or b.n_readings >= MIN_CALIBRATION_WINDOWS * w, "baselines.n_readings", b.n_readings,
             f"a sensor's threshold comes from the scores of its calibration windows, too few and too alike below "
             f"{MIN_CALIBRATION_WINDOWS} × stream.window_size ({MIN_CALIBRATION_WINDOWS * w} readings; on one "
             f"window every later one alarmed): use at least that")
    o, poll_s = cfg.ops, cfg.kafka.poll_timeout_ms / 1000
    _require(o.liveness_timeout_s == 0 or o.liveness_timeout_s > 2 * poll_s, "ops.liveness_timeout_s",
             o.liveness_timeout_s, f"use more than twice kafka.poll_timeout_ms ({poll_s:g} s; every step polls, and an "
             "idle worker's /healthz would fail), above the longest step, or 0 (off)")
    a, ttl_s = cfg.alerts, cfg.stream.sensor_ttl_s
    _require(a.dead_letter_topic not in cfg.kafka.input_topics, "alerts.dead_letter_topic", a.dead_letter_topic,
             "it is one of kafka.input_topics, so the worker would read its own dead letters back as readings: "
             "name another topic")
    _require(a.dead_letter_topic != cfg.kafka.output_topic, "alerts.dead_letter_topic", a.dead_letter_topic,
             "it is also kafka.output_topic, whose consumers would get failed webhook deliveries among the anomaly "
             'events: name another topic ("" = kafka.dead_letter_topic)')
    if a.enabled:  # a sensor is forgotten after sensor_ttl_s without a reading: a silence must be found before
        _require(a.silent_after_s < ttl_s, "alerts.silent_after_s", a.silent_after_s,
                 f"use less than stream.sensor_ttl_s ({ttl_s:g}), which forgets a silent sensor before it could be "
                 "reported, or raise stream.sensor_ttl_s")
        _require(a.silent_lag_ms < ttl_s * 1000, "alerts.silent_lag_ms", a.silent_lag_ms,
                 f"use less than stream.sensor_ttl_s ({ttl_s:g} s), which forgets a silent sensor before it could "
                 "be reported, or raise stream.sensor_ttl_s")
    return cfg


def _build(cls: type, table: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{prefix}.{key}"
        if key not in hints:
            raise ConfigError(_unknown_key(where, value, [f"{prefix}.{k}" for k in hints]))
        kwargs[key] = _coerce(hints[key], value, where)
    return cls(**kwargs)


def _shown(where: str, value: object, *like: str) -> str:
    """``value`` as an error message shows it: a secret's key (or a key like one) shows none of it."""
    secret = {*SECRET_ENV, "model_key"}
    return "<redacted>" if any(k.rpartition(".")[2] in secret for k in (where, *like)) else repr(value)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    shown = _shown(where, value)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"config key {where} = {shown} is invalid: it must be a list, e.g. [\"a\", \"b\"]")
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return tuple(_coerce(item, v, where) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {where} = {shown} is invalid: it must be a table")
        return dict(value)
    if _choices(hint):
        _require(value in _choices(hint), where, value, _use_one_of(_choices(hint)))
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        if (isinstance(value, bool) and hint is not bool) or not isinstance(value, hint):
            example = {int: "a whole number", float: "a number", str: "a quoted string", bool: "true or false"}
            raise ConfigError(f"config key {where} = {shown} is invalid: it must be {example[hint]}")
        return value
    raise AssertionError(f"unsupported config type {hint!r} for {where}")


def _unknown_key(where: str, value: object, known: list[str]) -> str:
    close = difflib.get_close_matches(where, known, n=1)
    fix = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(known)}" if known else \
        "this table takes no keys: remove it"
    return f"unknown config key {where} = {_shown(where, value, *close)}: {fix}"
