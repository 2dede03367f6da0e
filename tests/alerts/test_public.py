"""The alerts package's public names are deliberate."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

PUBLIC = {
    "aestream.alerts": ["AlertStage", "build_alert_stage"],
    "aestream.alerts.documents": ["ALERT_SCHEMA_ID", "alert_event_id", "calibration_event", "episode_event",
                                  "late_event", "quality_event", "top_channels"],
    "aestream.alerts.episodes": ["Episode", "EpisodeTracker", "Transition", "episode_id"],
    "aestream.alerts.routing": ["EVENT_TYPES", "Bands", "LogSpec", "Route", "Router", "SinkSpec", "TopicSpec",
                                "WebhookSpec", "check_alerts", "parse_bands", "parse_routes", "parse_sinks",
                                "tags_for"],
    "aestream.alerts.silence": ["Quality", "SilenceWatch"],
    "aestream.alerts.sinks": ["DeadLetter", "Delivery", "Post", "WebhookSink", "log_event", "post_json"],
    "aestream.alerts.stage": ["AlertStage", "build_alert_stage"],
    "aestream.alerts.state": ["STATE_VERSION", "read_state", "write_state"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_are_pinned_and_exist(module: str) -> None:
    m = importlib.import_module(module)
    assert sorted(m.__all__) == sorted(PUBLIC[module])
    for name in m.__all__:
        assert hasattr(m, name), name


def test_no_alerts_module_imports_kafka() -> None:
    for module in PUBLIC:
        source = Path(importlib.import_module(module).__file__ or "").read_text()
        assert "import kafka" not in source and "from kafka" not in source, module
