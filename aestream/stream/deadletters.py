"""Dead letters: what goes to the dead-letter topic for a record that is no reading, or a message the producer or
the broker refused.

A dead letter carries the original key and value, the reason and where it came from in ``aestream.*`` headers.
A value longer than ``max_bytes`` is not copied: the dead letter keeps its first :data:`PREFIX_BYTES` (at most
``max_bytes``), and
headers give its length and SHA-256 (``aestream.value.truncated = true``), so it can still be found and matched,
while the dead letter itself stays far below any broker's message size limit.

>>> m = dead_letter("dlq", Record("in", 0, 7, b"k", b"x" * 10, 1767225600000), "not JSON", max_bytes=4)
>>> m.value, dict(m.headers)["aestream.value.length"], dict(m.headers)["aestream.source.offset"]
(b'xxxx', b'10', b'7')
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from aestream.stream.messages import Outgoing, Record

__all__ = ["DEFAULT_MAX_BYTES", "PREFIX_BYTES", "dead_letter", "is_dead_letter", "refused", "route_refused"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 900_000  # whole values up to this: below both clients' default 1 MB request limit, with headers
PREFIX_BYTES = 4_096
REASON = "aestream.reason"


def dead_letter(topic: str, rec: Record, reason: str, max_bytes: int = DEFAULT_MAX_BYTES) -> Outgoing:
    """The dead letter of a consumed record: its bytes (or a digest of them) and key, provenance and reason."""
    value, value_headers = _value(rec.value if rec.value is not None else b"", max_bytes)
    if rec.value is None:  # a dead letter's value is bytes: this says the record's was null, not empty
        value_headers.append(("aestream.value.null", b"true"))
    headers = [
        (REASON, reason.encode()),
        ("aestream.source.topic", rec.topic.encode()),
        ("aestream.source.partition", str(rec.partition).encode()),
        ("aestream.source.offset", str(rec.offset).encode()),
        ("aestream.source.timestamp_ms", str(rec.timestamp_ms).encode()),
        *value_headers,
    ]
    return Outgoing(topic, value, rec.key, headers)


def refused(msg: Outgoing, topic: str, reason: str, max_bytes: int = DEFAULT_MAX_BYTES) -> Outgoing:
    """The dead letter of a message the producer or the broker refused (too large, say): its own headers, then the
    reason and the topic it was meant for. One of its own named like those (a changelog record's
    ``aestream.source.topic``) gives way, so each name is there once.

    >>> d = refused(Outgoing("anomalies", b"e" * 9, b"k", [("h", b"1")]), "dlq", "too large", max_bytes=4)
    >>> d.topic, d.value, [k for k, _ in d.headers][:3], dict(d.headers)["aestream.value.truncated"]
    ('dlq', b'eeee', ['h', 'aestream.reason', 'aestream.source.topic'], b'true')
    """
    value, value_headers = _value(msg.value, max_bytes)
    added = [(REASON, reason.encode()), ("aestream.source.topic", msg.topic.encode()), *value_headers]
    names = {k for k, _ in added}
    return Outgoing(topic, value, msg.key, [*((k, v) for k, v in msg.headers if k not in names), *added])


def route_refused(msg: Outgoing, error: str, send: Callable[[Outgoing], None], topic: str,
                  max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """What a sink does with a message the producer or the broker refused for itself (too large, invalid): sends
    its dead letter to ``topic`` (``"dead_lettered"``), or, when it is a dead letter already, logs and drops it
    (``"dropped"``: never retried, never raised, so the step goes on)."""
    reason = f"producing to {msg.topic} was refused ({len(msg.value)} bytes): {error}"
    if is_dead_letter(msg) or msg.topic == topic:
        log.error("dropped a dead letter (%s): %s", msg.topic, reason)
        return "dropped"
    log.warning("dead-lettered a message for %s: %s", msg.topic, reason)
    send(refused(msg, topic, reason, max_bytes))
    return "dead_lettered"


def is_dead_letter(msg: Outgoing) -> bool:
    """Whether ``msg`` is a dead letter already (one refused in turn is logged, never dead-lettered again)."""
    return any(k == REASON for k, _ in msg.headers)


def _value(value: bytes, max_bytes: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    """``value`` itself when it is at most ``max_bytes`` long, else its prefix and the headers that say so.

    >>> _value(b"abc", 3)
    (b'abc', [])
    >>> v, h = _value(b"a" * 5000, 4500)
    >>> len(v), [k for k, _ in h]
    (4096, ['aestream.value.truncated', 'aestream.value.length', 'aestream.value.sha256'])
    """
    if len(value) <= max_bytes:
        return value, []
    return value[:min(PREFIX_BYTES, max_bytes)], [("aestream.value.truncated", b"true"),
                                  ("aestream.value.length", str(len(value)).encode()),
                                  ("aestream.value.sha256", hashlib.sha256(value).hexdigest().encode())]
