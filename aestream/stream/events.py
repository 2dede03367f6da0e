"""Anomaly events: the JSON documents written to the output topic, with deterministic ids.

The schema is ``aestream/schemas/anomaly-event.v1.json``. An event id depends only on (sensor, window end,
model version), so a replay after a crash yields the same ids and consumers can deduplicate.

>>> event_id("pump-7", 1767225600000, "v0001") == event_id("pump-7", 1767225600000, "v0001")
True
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

import numpy as np

__all__ = ["SCHEMA_ID", "anomaly_event", "encode_event", "event_id", "iso_ms", "severity_of",
           "window_fields"]

SCHEMA_ID = "aestream.event/1"
_NAMESPACE = uuid.UUID("6f1c1c7e-3a50-4b0a-9a3e-2f1f2b6a5e11")
TOP_CHANNELS = 3


def event_id(sensor: str, window_end_ms: int, model_version: str) -> str:
    """A UUIDv5 of (sensor, window end, model version)."""
    return str(uuid.uuid5(_NAMESPACE, f"{sensor}\x1f{window_end_ms}\x1f{model_version}"))


def iso_ms(ts_ms: int) -> str:
    """``1767225600000`` → ``'2026-01-01T00:00:00.000Z'``.

    >>> iso_ms(1767225600000)
    '2026-01-01T00:00:00.000Z'
    """
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def severity_of(ratio: float, critical_ratio: float) -> str:
    """``critical`` at or above ``critical_ratio`` × threshold, else ``warning``.

    >>> severity_of(1.2, 2.0), severity_of(2.5, 2.0)
    ('warning', 'critical')
    """
    return "critical" if ratio >= critical_ratio else "warning"


def window_fields(window_start_ms: int, window_end_ms: int, score: float, threshold: float) -> dict[str, Any]:
    """The window and score fields every event about a window carries (anomaly and alert events alike).

    >>> window_fields(0, 1000, 3.0, 2.0)["ratio"]
    1.5
    """
    return {
        "window_start_ms": int(window_start_ms),
        "window_end_ms": int(window_end_ms),
        "window_end": iso_ms(window_end_ms),
        "score": round(float(score), 6),
        "threshold": round(float(threshold), 6),
        "ratio": round(float(score) / max(float(threshold), 1e-12), 4),
    }


def anomaly_event(
    *,
    sensor: str,
    window_start_ms: int,
    window_end_ms: int,
    score: float,
    threshold: float,
    critical_ratio: float,
    channels: tuple[str, ...],
    shares: np.ndarray,
    model_version: str,
    model_family: str,
    source: tuple[str, int, int],
) -> dict[str, Any]:
    """The event document for one window in alarm. ``alarm`` says why: ``crossed`` when its own (smoothed) score is
    over its threshold, ``held`` when it is not but the k-of-n rule holds the sensor's alarm."""
    fields = window_fields(window_start_ms, window_end_ms, score, threshold)
    order = np.argsort(-shares)[:TOP_CHANNELS]
    return {
        "schema": SCHEMA_ID,
        "type": "anomaly",
        "event_id": event_id(sensor, window_end_ms, model_version),
        "sensor": sensor,
        **fields,
        "alarm": "crossed" if score > threshold else "held",
        "severity": severity_of(fields["ratio"], critical_ratio),
        "channels": [{"name": channels[i], "share": round(float(shares[i]), 4)} for i in order],
        "model_version": model_version,
        "model_family": model_family,
        "source": {"topic": source[0], "partition": source[1], "offset": source[2]},
    }


def encode_event(event: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(event, separators=(",", ":"), allow_nan=False).encode()
