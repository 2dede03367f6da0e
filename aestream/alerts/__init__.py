"""Alert routing: scored windows become episodes (opened, updated, resolved) and data-quality events
(sensor_silent, sensor_resumed), routed by rules to Kafka topics, HTTP webhooks and the log.

Modules: :mod:`~aestream.alerts.episodes` (the per-sensor episode state machine), :mod:`~aestream.alerts.silence`
(silent sensors), :mod:`~aestream.alerts.routing` (bands, sink specs, rules), :mod:`~aestream.alerts.documents`
(the event JSON), :mod:`~aestream.alerts.sinks` (webhook and log delivery), :mod:`~aestream.alerts.state`
(the state file) and :mod:`~aestream.alerts.stage` (the worker stage that ties them together).
"""

from aestream.alerts.stage import AlertStage, build_alert_stage

__all__ = ["AlertStage", "build_alert_stage"]
