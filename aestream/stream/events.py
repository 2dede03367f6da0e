"""Anomaly events: the JSON documents written to the output topic, with deterministic ids.

The schema is ``aestream/schemas/anomaly-event.v1.json``. An event id depends only on (sensor, window end,
model version), so a replay after a crash yields the same ids and consumers can deduplicate.

>>> event_id("pump-7", 1767225600000, "v0001") == event_id("pump-7", 1767225600000, "v0001")
True
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

__all__ = ["SCHEMA_ID", "anomaly_event", "anomaly_events", "compact_json", "encode_event", "event_id", "iso_ms",
           "ratio_of", "rounded", "severity_of", "top_channels", "window_fields"]

SCHEMA_ID = "aestream.event/1"
_MIN_THRESHOLD = 1e-12  # what a threshold of 0 counts as in a ratio
_NAMESPACE = uuid.UUID("6f1c1c7e-3a50-4b0a-9a3e-2f1f2b6a5e11")
TOP_CHANNELS = 3


def event_id(sensor: str, window_end_ms: int, model_version: str) -> str:
    """A UUIDv5 of (sensor, window end, model version): ``uuid.uuid5``'s, made without its objects (an event's
    id is on the every-event path).

    >>> name = "pump-7\x1f1767225600000\x1fv0001"
    >>> event_id("pump-7", 1767225600000, "v0001") == str(uuid.uuid5(_NAMESPACE, name))
    True
    """
    b = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{sensor}\x1f{window_end_ms}\x1f{model_version}".encode(),
                               usedforsecurity=False).digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x50  # version 5
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_NAMESPACE_BYTES = _NAMESPACE.bytes


def iso_ms(ts_ms: int) -> str:
    """``1767225600000`` → ``'2026-01-01T00:00:00.000Z'`` (UTC, milliseconds).

    >>> iso_ms(1767225600000), iso_ms(1767225600123), iso_ms(-1)
    ('2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.123Z', '1969-12-31T23:59:59.999Z')
    """
    ts_ms = int(ts_ms)
    return f"{_iso_second(ts_ms // 1000)}.{ts_ms % 1000:03d}Z"


@functools.lru_cache(maxsize=4096)  # a fleet's windows end in the same few seconds: one strftime each
def _iso_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


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
    return _window_fields(int(window_start_ms), int(window_end_ms), rounded(score, 6), rounded(threshold, 6),
                          ratio_of(score, threshold))


def ratio_of(score: float, threshold: float) -> float:
    """A window's score over its threshold as every event carries it (4 decimals; a threshold of 0, from flat
    calibration readings, counts as 1e-12), and as severities and alert bands are decided on.

    >>> ratio_of(3.0, 2.0), ratio_of(1.99995, 1.0), ratio_of(5.0, 0.0)
    (1.5, 2.0, 5000000000000.0)
    """
    return rounded(float(score) / max(float(threshold), _MIN_THRESHOLD), 4)


def rounded(x: float, digits: int) -> float:
    """``x`` to ``digits`` decimals as numpy rounds a batch (:func:`anomaly_events`: scaled, then half to even), so
    that one window's numbers, and the severity they give, are the same on every path. Python's ``round`` is
    exact and differs at some halves: 1.99995 → 1.9999, where numpy gives 2.0.

    >>> rounded(1.99995, 4), round(1.99995, 4)
    (2.0, 1.9999)
    """
    return float(np.round(float(x), digits))


def _window_fields(start_ms: int, end_ms: int, score: float, threshold: float, ratio: float) -> dict[str, Any]:
    """:func:`window_fields` of numbers already rounded."""
    return {"window_start_ms": start_ms, "window_end_ms": end_ms, "window_end": iso_ms(end_ms), "score": score,
            "threshold": threshold, "ratio": ratio}


def _anomaly(sensor: str, fields: dict[str, Any], alarm: str, severity: str, channels: list[dict[str, Any]],
             model_version: str, model_family: str, source: tuple[str, int, int]) -> dict[str, Any]:
    """The anomaly event document of a window's ``fields`` (:func:`window_fields`), in the schema's key order."""
    return {
        "schema": SCHEMA_ID,
        "type": "anomaly",
        "event_id": event_id(sensor, fields["window_end_ms"], model_version),
        "sensor": sensor,
        **fields,
        "alarm": alarm,
        "severity": severity,
        "channels": channels,
        "model_version": model_version,
        "model_family": model_family,
        "source": {"topic": source[0], "partition": source[1], "offset": source[2]},
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
    over its threshold, ``held`` when it is not but the k-of-n rule holds the sensor's alarm. A step's windows in
    alarm: :func:`anomaly_events`."""
    fields = window_fields(window_start_ms, window_end_ms, score, threshold)
    share = shares.tolist()  # Python floats at once: a numpy scalar per channel costs more than the rounding
    return _anomaly(sensor, fields, "crossed" if score > threshold else "held",
                    severity_of(fields["ratio"], critical_ratio),
                    [{"name": channels[i], "share": rounded(share[i], 4)} for i in top_channels(shares[None, :])[0]],
                    model_version, model_family, source)


def anomaly_events(
    *,
    sensors: Sequence[str],
    window_start_ms: Sequence[int],
    window_end_ms: Sequence[int],
    scores: np.ndarray,
    thresholds: np.ndarray,
    critical_ratio: float,
    channels: tuple[str, ...],
    shares: np.ndarray,
    model_version: str,
    model_family: str,
    sources: Sequence[tuple[str, int, int]],
) -> list[dict[str, Any]]:
    """:func:`anomaly_event` of each of a batch of windows in alarm (``scores``, ``thresholds``: ``(B,)``;
    ``shares``: ``(B, C)``), the numbers rounded and compared for the whole batch at once: when every window emits,
    a Python ``round`` a number was a quarter of an event's cost.

    >>> one = dict(sensor="p", window_start_ms=0, window_end_ms=1000, score=0.123456789, threshold=0.1,
    ...            critical_ratio=2.0, channels=("a", "b"), shares=np.array([0.25, 0.75]), model_version="v1",
    ...            model_family="vanilla", source=("in", 0, 7))
    >>> anomaly_events(sensors=["p"], window_start_ms=[0], window_end_ms=[1000], scores=np.array([0.123456789]),
    ...                thresholds=np.array([0.1]), critical_ratio=2.0, channels=("a", "b"),
    ...                shares=np.array([[0.25, 0.75]]), model_version="v1", model_family="vanilla",
    ...                sources=[("in", 0, 7)]) == [anomaly_event(**one)]
    True
    """
    scores, thresholds = np.asarray(scores, dtype=np.float64), np.asarray(thresholds, dtype=np.float64)
    ratios = np.round(scores / np.maximum(thresholds, _MIN_THRESHOLD), 4)
    severities = np.where(ratios >= critical_ratio, "critical", "warning").tolist()
    alarms = np.where(scores > thresholds, "crossed", "held").tolist()
    share = np.round(shares, 4).tolist()
    return [_anomaly(sensor, _window_fields(int(start), int(end), score, threshold, ratio), alarm, severity,
                     [{"name": channels[i], "share": row[i]} for i in order], model_version, model_family, source)
            for sensor, start, end, score, threshold, ratio, alarm, severity, row, order, source in zip(
                sensors, window_start_ms, window_end_ms, np.round(scores, 6).tolist(),
                np.round(thresholds, 6).tolist(), ratios.tolist(), alarms, severities, share, top_channels(shares),
                sources)]


def top_channels(shares: np.ndarray) -> list[list[int]]:
    """Each row's ``TOP_CHANNELS`` channels by falling share (ties in channel order), of ``(B, C)`` shares.

    >>> top_channels(np.array([[0.1, 0.5, 0.1, 0.3], [0.25, 0.25, 0.25, 0.25]]))
    [[1, 3, 0], [0, 1, 2]]
    """
    return np.argsort(-shares, axis=1, kind="stable")[:, :TOP_CHANNELS].tolist()  # type: ignore[no-any-return]


def compact_json(doc: Any) -> bytes:
    """Compact UTF-8 JSON (msgspec's), in bytes of exactly its size: a message waiting to be sent holds on to any
    spare capacity (orjson's kept ~7 KB: 30k events took 219 MiB against 8 MiB).

    >>> compact_json({"a": [1, 2.5]})
    b'{"a":[1,2.5]}'
    """
    return msgspec.json.encode(doc)


def encode_event(event: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; a NaN or infinite number raises ``ValueError`` (msgspec would write it as ``null``).

    >>> encode_event({"a": 1.5, "b": None, "c": "é"}).decode()
    '{"a":1.5,"b":null,"c":"é"}'
    >>> encode_event({"score": float("nan")})
    Traceback (most recent call last):
    ...
    ValueError: Out of range float values are not JSON compliant
    """
    out = compact_json(event)
    if b"null" in out:  # a real null, or a number that is not finite: the stdlib encoder tells them apart
        json.dumps(event, allow_nan=False)
    return out
