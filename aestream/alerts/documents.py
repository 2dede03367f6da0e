"""Alert event documents (schema ``aestream/schemas/alert-event.v1.json``), with deterministic event ids.

Episode events (``opened``, ``updated``, ``resolved``) carry the window that caused the transition; data-quality
events (``sensor_silent``, ``sensor_resumed``) carry the sensor's last window end. An event id is a UUIDv5 of
(episode id or sensor, type, window end), so replays repeat ids and consumers can deduplicate. The data-quality
event ``sensor_late_readings`` (a sensor dropped ``stream.n_late_report`` late readings within a minute) is seen in
processing time: its id is of (sensor, type, the wall-clock ms it was seen).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from aestream.alerts.episodes import Transition
from aestream.alerts.silence import Quality
from aestream.stream.events import iso_ms, rounded, window_fields
from aestream.stream.lateness import LateReport

__all__ = ["ALERT_SCHEMA_ID", "alert_event_id", "calibration_event", "episode_event", "late_event", "quality_event",
           "top_channels"]

ALERT_SCHEMA_ID = "aestream.alert/1"
_NAMESPACE = uuid.UUID("5d3e0c1a-77b2-4e43-9f3c-1c9a8b0f2e64")
TOP_CHANNELS = 3


def alert_event_id(subject: str, kind: str, window_end_ms: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{subject}\x1f{kind}\x1f{window_end_ms}"))


def top_channels(names: Sequence[str], shares: Sequence[float] | np.ndarray,
                 n: int = TOP_CHANNELS) -> list[tuple[str, float]]:
    """The ``n`` channels with the largest share of the score, largest first.

    >>> top_channels(("a", "b", "c"), (0.2, 0.5, 0.3), n=2)
    [('b', 0.5), ('c', 0.3)]
    """
    order = sorted(range(len(names)), key=lambda i: -float(shares[i]))[:n]
    return [(names[i], rounded(shares[i], 4)) for i in order]


def episode_event(t: Transition, *, window_start_ms: int, window_end_ms: int, score: float, threshold: float,
                  severity: str, model_version: str, channels: list[tuple[str, float]],
                  tags: Sequence[str] = ()) -> dict[str, Any]:
    """The document for an episode transition caused by the window ``[window_start_ms, window_end_ms]``."""
    ep = t.episode
    return {
        "schema": ALERT_SCHEMA_ID,
        "type": t.kind,
        "category": "anomaly",
        "event_id": alert_event_id(ep.episode_id, t.kind, window_end_ms),
        "episode_id": ep.episode_id,
        "sensor": ep.sensor,
        "severity": severity,
        **window_fields(window_start_ms, window_end_ms, score, threshold),
        "model_version": model_version,
        "channels": [{"name": n, "share": s} for n, s in channels],
        "tags": list(tags),
        "episode": {
            "started_ms": ep.started_ms,
            "opened_ms": ep.opened_ms,
            "opened": iso_ms(ep.opened_ms),
            "last_alarm_ms": ep.last_alarm_ms,
            "resolved_ms": ep.resolved_ms,
            "severity": ep.severity,
            "peak_ratio": round(float(ep.peak_ratio), 4),
            "n_windows": ep.n_windows,
            "n_updates": ep.n_updates,
        },
    }


def calibration_event(sensor: str, end_ms: int, threshold: float | None, n_readings: int | None,
                      tags: Sequence[str] = ()) -> dict[str, Any]:
    """The document for a sensor starting (``threshold`` None) or finishing the calibration of its baseline.

    >>> calibration_event("pump-1", 60_000, 2.5, 400)["type"]
    'calibration_finished'
    """
    kind = "calibration_started" if threshold is None else "calibration_finished"
    return {
        "schema": ALERT_SCHEMA_ID,
        "type": kind,
        "category": "data_quality",
        "event_id": alert_event_id(sensor, kind, end_ms),
        "sensor": sensor,
        "severity": "info",
        "window_end_ms": end_ms,
        "window_end": iso_ms(end_ms),
        "threshold": None if threshold is None else round(float(threshold), 6),
        "n_readings": n_readings,
        "tags": list(tags),
    }


def quality_event(q: Quality, tags: Sequence[str] = ()) -> dict[str, Any]:
    """The document for a ``sensor_silent`` or ``sensor_resumed`` transition."""
    at = q.resumed_window_end_ms if q.resumed_window_end_ms is not None else q.last_window_end_ms
    return {
        "schema": ALERT_SCHEMA_ID,
        "type": q.kind,
        "category": "data_quality",
        "event_id": alert_event_id(q.sensor, q.kind, at),
        "sensor": q.sensor,
        "severity": "info",
        "last_window_end_ms": q.last_window_end_ms,
        "last_window_end": iso_ms(q.last_window_end_ms),
        "resumed_window_end_ms": q.resumed_window_end_ms,
        "silent_for_s": round(float(q.silent_for_s), 3),
        "detected_by": q.detected_by,
        "tags": list(tags),
    }


def late_event(r: LateReport, tags: Sequence[str] = ()) -> dict[str, Any]:
    """The document for a sensor that dropped many late readings (``sensor_late_readings``)."""
    return {
        "schema": ALERT_SCHEMA_ID,
        "type": "sensor_late_readings",
        "category": "data_quality",
        "event_id": alert_event_id(r.sensor, "sensor_late_readings", r.at_ms),
        "sensor": r.sensor,
        "severity": "info",
        "n_late": r.n_late,
        "period_s": r.period_s,
        "seen_ms": r.at_ms,
        "seen": iso_ms(r.at_ms),
        "tags": list(tags),
    }
