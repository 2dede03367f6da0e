"""Prometheus metrics of a worker, in a registry of their own (so tests and several workers in one process never
collide). Every name starts with ``aestream_``; docs/operations.md lists them.

The worker loop feeds them through :class:`aestream.ops.instrument.WorkerMetrics`; the retraining job calls
:meth:`Metrics.retrain`, alert sinks :meth:`Metrics.webhook_failure` and the Kafka sink
:meth:`Metrics.message_refused`.

>>> from aestream.worker import StepStats
>>> m = Metrics()
>>> m.observe_step(StepStats(records=2, readings=5, windows=1, events=1, events_out=[{"severity": "critical"}]), 0.01)
>>> m.value("aestream_readings_total"), m.value("aestream_anomalies_total", severity="critical")
(5.0, 1.0)
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

if TYPE_CHECKING:
    from aestream.worker import StepStats

__all__ = ["BATCH_BUCKETS_S", "DEAD_LETTER_REASONS", "RETRAIN_BUCKETS_S", "RETRAIN_OUTCOMES", "SEVERITIES", "Metrics",
           "RetrainMetrics"]

SEVERITIES = ("warning", "critical")
DEAD_LETTER_REASONS = ("invalid", "oversized", "future")  # InvalidReading.kind
RETRAIN_OUTCOMES = ("published", "rejected", "failed", "skipped")  # RetrainOutcome.status
BATCH_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RETRAIN_BUCKETS_S = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class RetrainMetrics:
    """The retraining runs alone: what the fleet's trainer serves (a worker's gauges there, at 0, would read as a
    worker without a model or partitions, and keep a worker-absence rule from firing)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.retrains = Counter("aestream_retrains_total", "Retraining runs, by outcome.", ["outcome"],
                                registry=self.registry)
        self.retrain_seconds = Histogram("aestream_retrain_duration_seconds", "Duration of retraining runs.",
                                         ["outcome"], buckets=RETRAIN_BUCKETS_S, registry=self.registry)
        # every labelled series from the first scrape, at 0: one born at 1 with its first run is no increase() to
        # Prometheus, so a first failed retrain would never fire an alert
        for outcome in RETRAIN_OUTCOMES:
            self.retrains.labels(outcome=outcome)
            self.retrain_seconds.labels(outcome=outcome)

    def retrain(self, outcome: str, seconds: float) -> None:
        """Count one retraining run (``outcome`` e.g. ``published``, ``rejected``, ``failed``) and its duration."""
        self.retrains.labels(outcome=outcome).inc()
        self.retrain_seconds.labels(outcome=outcome).observe(seconds)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (what ``/metrics`` serves)."""
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float | None:
        """The current value of one sample (``name`` as exposed, e.g. ``aestream_readings_total``), or ``None``."""
        return self.registry.get_sample_value(name, labels)


class Metrics(RetrainMetrics):
    """The worker's counters, gauges and histograms (the retraining runs' too: a worker may retrain), with the
    methods that move them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.records = Counter("aestream_records_total", "Kafka messages consumed (fresh and replayed).",
                               registry=r)
        self.readings = Counter("aestream_readings_total", "Sensor readings decoded from consumed messages.",
                                registry=r)
        self.windows = Counter("aestream_windows_scored_total", "Windows scored by the autoencoder.", registry=r)
        self.anomalies = Counter("aestream_anomalies_total", "Anomaly events emitted, by severity.",
                                 ["severity"], registry=r)
        self.dead_letters = Counter("aestream_dead_letters_total",
                                    "Messages sent to the dead-letter topic, by reason: invalid (not a reading), "
                                    "oversized (above stream.max_message_bytes), future (beyond stream.max_future_ms).",
                                    ["reason"], registry=r)
        self.late = Counter("aestream_late_readings_total", "Readings dropped as older than their sensor's window.",
                            registry=r)
        self.replayed = Counter("aestream_replayed_records_total",
                                "Messages re-read to rebuild windows after a partition was assigned.", registry=r)
        self.batch_seconds = Histogram("aestream_batch_duration_seconds",
                                       "Time of one non-empty step: poll, decode, score, emit, flush, commit.",
                                       buckets=BATCH_BUCKETS_S, registry=r)
        self.lag = Gauge("aestream_consumer_lag", "Messages left to read, per assigned partition.",
                         ["topic", "partition"], registry=r)
        self.partitions = Gauge("aestream_assigned_partitions", "Partitions assigned to this worker.", registry=r)
        self.calibrating = Gauge("aestream_calibrating_sensors",
                                 "Sensors calibrating their baseline (they emit no anomaly events meanwhile).",
                                 registry=r)
        self.model = Info("aestream_model", "The model version being served.", registry=r)
        self.model_loaded = Gauge("aestream_model_loaded", "1 once a model is being served, else 0.", registry=r)
        self.model_swaps = Counter("aestream_model_swaps_total", "Model versions swapped in (the first included).",
                                   registry=r)
        self.model_refusals = Counter("aestream_model_refusals_total",
                                      "Model versions refused on loading (a corrupt or incompatible bundle; tried "
                                      "again with backoff while the last good version serves).", registry=r)
        self.refused = Counter("aestream_refused_messages_total",
                               "Messages the producer or the broker refused (too large, invalid), by outcome: "
                               "dead_lettered, or dropped (a dead letter refused in turn).", ["outcome"], registry=r)
        self.webhook_failures = Counter("aestream_webhook_failures_total", "Alert deliveries that failed, by sink.",
                                        ["sink"], registry=r)
        self.alert_events = Counter("aestream_alert_events_total",
                                    "Alert events the alert stage emitted, by type (opened, updated, resolved, "
                                    "sensor_silent, …) and severity (a band, or info for data quality).",
                                    ["type", "severity"], registry=r)
        for s in SEVERITIES:  # so both series exist (at 0) from the first scrape
            self.anomalies.labels(severity=s)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason=reason)
        for outcome in ("dead_lettered", "dropped"):
            self.refused.labels(outcome=outcome)
        for s in SEVERITIES:  # episodes opened at each default band, from the first scrape
            self.alert_events.labels(type="opened", severity=s)

    def observe_step(self, stats: StepStats, seconds: float) -> None:
        """Count what one worker step did; its duration goes to the histogram when it had records."""
        self.records.inc(stats.records)
        self.readings.inc(stats.readings)
        self.calibrating.set(stats.calibrating)
        self.windows.inc(stats.windows)
        for reason, n in stats.rejected.items():
            self.dead_letters.labels(reason=reason).inc(n)
        unsorted = stats.dead_letters - sum(stats.rejected.values())
        if unsorted > 0:
            self.dead_letters.labels(reason="invalid").inc(unsorted)
        self.late.inc(stats.late)
        self.replayed.inc(stats.replayed)
        # one labelled child and one locked add per severity, not per event (each costs microseconds)
        for severity, n in collections.Counter(str(e.get("severity", "unknown")) for e in stats.events_out).items():
            self.anomalies.labels(severity=severity).inc(n)
        if stats.records:
            self.batch_seconds.observe(seconds)

    def set_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        """Replace the lag gauges with ``{(topic, partition): messages}`` (revoked partitions disappear)."""
        self.lag.clear()
        for (topic, partition), n in lag.items():
            self.lag.labels(topic=topic, partition=str(partition)).set(n)
        self.partitions.set(len(lag))

    def set_model(self, version: str, family: str) -> None:
        """Record the model now served."""
        self.model.info({"version": version, "family": family})
        self.model_loaded.set(1)
        self.model_swaps.inc()

    def model_refused(self) -> None:
        """Count one refused load of a model version."""
        self.model_refusals.inc()

    def message_refused(self, outcome: str) -> None:
        """Count one message the producer or the broker refused (``dead_lettered`` or ``dropped``)."""
        self.refused.labels(outcome=outcome).inc()

    def alert_event(self, event: dict[str, Any]) -> None:
        """Count one alert event by its ``type`` and ``severity``."""
        self.alert_events.labels(type=event["type"], severity=event.get("severity", "")).inc()

    def webhook_sinks(self, names: Iterable[str]) -> None:
        """Each webhook sink's failure count, at 0 from the first scrape (its first failure an increase)."""
        for name in names:
            self.webhook_failures.labels(sink=name)

    def webhook_failure(self, sink: str) -> None:
        """Count one failed alert delivery to ``sink``."""
        self.webhook_failures.labels(sink=sink).inc()
