"""Metrics: what a step, the lag, a model swap, a retrain and a webhook failure do to the registry; and the
worker observer feeding them."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aestream.ops.instrument import WorkerMetrics, readiness_checks
from aestream.ops.metrics import Metrics
from aestream.worker import StepStats

EXPECTED = {
    "aestream_records": "counter",
    "aestream_readings": "counter",
    "aestream_windows_scored": "counter",
    "aestream_anomalies": "counter",
    "aestream_dead_letters": "counter",
    "aestream_late_readings": "counter",
    "aestream_replayed_records": "counter",
    "aestream_batch_duration_seconds": "histogram",
    "aestream_consumer_lag": "gauge",
    "aestream_assigned_partitions": "gauge",
    "aestream_calibrating_sensors": "gauge",
    "aestream_alert_events": "counter",
    "aestream_model": "info",
    "aestream_model_loaded": "gauge",
    "aestream_model_swaps": "counter",
    "aestream_retrains": "counter",
    "aestream_retrain_duration_seconds": "histogram",
    "aestream_webhook_failures": "counter",
    "aestream_refused_messages": "counter",
    "aestream_model_refusals": "counter",
}


def _families(m: Metrics) -> dict[str, str]:
    """name → type, without the ``*_created`` timestamps the client adds beside counters and histograms."""
    return {f.name: f.type for f in text_string_to_metric_families(m.exposition().decode())
            if not f.name.endswith("_created")}


def test_every_metric_is_exposed_with_its_type_and_the_aestream_prefix() -> None:
    families = _families(Metrics())
    # the text format 0.0.4 exposes an Info as a gauge named <name>_info
    expected = {("aestream_model_info" if k == "aestream_model" else k): ("gauge" if t == "info" else t)
                for k, t in EXPECTED.items()}
    assert families == expected


def test_two_instances_never_share_a_registry() -> None:
    a, b = Metrics(), Metrics()
    a.observe_step(StepStats(records=1, readings=3), 0.1)
    assert a.value("aestream_readings_total") == 3.0
    assert b.value("aestream_readings_total") == 0.0


def test_observe_step_counts_readings_windows_events_by_severity_dead_letters_and_late() -> None:
    m = Metrics()
    events = [{"severity": "warning"}, {"severity": "critical"}, {"severity": "warning"}, {}]
    m.observe_step(StepStats(records=10, readings=40, windows=8, events=4, dead_letters=2, late=1, replayed=4,
                             events_out=events), 0.2)
    m.observe_step(StepStats(), 0.2)  # an empty poll: no latency sample
    assert m.value("aestream_records_total") == 10
    assert m.value("aestream_readings_total") == 40
    assert m.value("aestream_windows_scored_total") == 8
    assert m.value("aestream_anomalies_total", severity="warning") == 2
    assert m.value("aestream_anomalies_total", severity="critical") == 1
    assert m.value("aestream_anomalies_total", severity="unknown") == 1
    assert m.value("aestream_dead_letters_total", reason="invalid") == 2
    assert m.value("aestream_late_readings_total") == 1
    assert m.value("aestream_replayed_records_total") == 4
    assert m.value("aestream_batch_duration_seconds_count") == 1
    assert m.value("aestream_batch_duration_seconds_sum") == pytest.approx(0.2)
    assert m.value("aestream_batch_duration_seconds_bucket", le="0.25") == 1
    assert m.value("aestream_batch_duration_seconds_bucket", le="0.1") == 0


def test_dead_letters_are_counted_by_reason_and_each_reason_is_exposed_from_the_start() -> None:
    m = Metrics()
    assert [m.value("aestream_dead_letters_total", reason=r) for r in ("invalid", "oversized", "future")] == [0] * 3
    m.observe_step(StepStats(records=9, dead_letters=6, rejected={"future": 3, "oversized": 1, "invalid": 2}), 0.1)
    assert m.value("aestream_dead_letters_total", reason="future") == 3
    assert m.value("aestream_dead_letters_total", reason="oversized") == 1
    assert m.value("aestream_dead_letters_total", reason="invalid") == 2


def test_lag_gauges_are_replaced_so_revoked_partitions_disappear() -> None:
    m = Metrics()
    m.set_lag({("readings", 0): 5, ("readings", 1): 7})
    assert m.value("aestream_consumer_lag", topic="readings", partition="1") == 7
    assert m.value("aestream_assigned_partitions") == 2
    m.set_lag({("readings", 0): 0})
    assert m.value("aestream_consumer_lag", topic="readings", partition="0") == 0
    assert m.value("aestream_consumer_lag", topic="readings", partition="1") is None
    assert m.value("aestream_assigned_partitions") == 1


def test_model_info_retrain_and_webhook_failures() -> None:
    m = Metrics()
    assert m.value("aestream_model_loaded") == 0
    m.set_model("v0001", "conv")
    m.set_model("v0002", "conv")
    assert m.value("aestream_model_info", version="v0002", family="conv") == 1
    assert m.value("aestream_model_info", version="v0001", family="conv") is None
    assert m.value("aestream_model_loaded") == 1 and m.value("aestream_model_swaps_total") == 2
    m.retrain("published", 42.0)
    m.retrain("rejected", 30.0)
    m.retrain("published", 50.0)
    assert m.value("aestream_retrains_total", outcome="published") == 2
    assert m.value("aestream_retrain_duration_seconds_sum", outcome="published") == 92.0
    m.webhook_failure("ops-webhook")
    assert m.value("aestream_webhook_failures_total", sink="ops-webhook") == 1
    m.message_refused("dead_lettered")
    assert m.value("aestream_refused_messages_total", outcome="dead_lettered") == 1
    assert m.value("aestream_refused_messages_total", outcome="dropped") == 0


class _Bundle:
    def __init__(self, version: str) -> None:
        self.version, self.family = version, "vanilla"


class _FakeSource:
    def __init__(self) -> None:
        self.lag_calls = 0
        self.parts = {("in", 0), ("in", 1)}

    def assignment(self) -> set[tuple[str, int]]:
        return set(self.parts)

    def lag(self) -> dict[tuple[str, int], int]:
        self.lag_calls += 1
        return {p: 10 * self.lag_calls for p in self.parts}


def test_the_observer_counts_steps_and_swaps_and_reads_the_lag_at_its_interval() -> None:
    now = [0.0]
    source, m = _FakeSource(), Metrics()
    observer = WorkerMetrics(m, source, lag_interval_s=5.0, clock=lambda: now[0])
    broker = [True]
    checks = readiness_checks(observer.state, lambda: broker[0])
    assert checks() == {"partitions_assigned": False, "model_loaded": False, "broker_reachable": True}

    observer.on_model(_Bundle("v0001"))  # type: ignore[arg-type]
    assert m.value("aestream_model_info", version="v0001", family="vanilla") == 1
    for t in (0.0, 1.0, 6.0):
        now[0] = t
        observer.on_step(StepStats(records=1, readings=2, windows=1), 0.01)
    assert m.value("aestream_readings_total") == 6 and m.value("aestream_batch_duration_seconds_count") == 3
    observer.on_step(StepStats(calibrating=7), 0.0)
    assert m.value("aestream_calibrating_sensors") == 7
    assert source.lag_calls == 2  # at t=0 and t=6, not at t=1
    assert m.value("aestream_consumer_lag", topic="in", partition="1") == 20
    assert checks() == {"partitions_assigned": True, "model_loaded": True, "broker_reachable": True}
    observer.on_model(_Bundle("v0002"))  # type: ignore[arg-type]
    assert m.value("aestream_model_swaps_total") == 2
    broker[0] = False
    assert checks()["broker_reachable"] is False


def test_lag_is_not_queried_while_the_broker_is_down_and_errors_never_stop_the_step(
        caplog: pytest.LogCaptureFixture) -> None:
    source = _FakeSource()
    up = [False]
    observer = WorkerMetrics(Metrics(), source, lag_interval_s=0.0, broker_ok=lambda: up[0])
    observer.on_step(StepStats(records=1), 0.01)
    assert source.lag_calls == 0

    def broken() -> dict[tuple[str, int], int]:
        raise TimeoutError("offsets request timed out")

    up[0] = True
    source.lag = broken  # type: ignore[method-assign]
    observer.on_step(StepStats(records=1), 0.01)
    assert "could not read the consumer lag: offsets request timed out" in caplog.text
