"""The error hierarchy: every error aestream raises on purpose is an :class:`AestreamError`.

Messages say what was wrong, the offending value, where, and what to do about it. Every command turns them into
``aestream: error: …`` and exit code 2 (a configuration or input to fix: a restart cannot help), but for a
:class:`DeliveryError`, exit code 1 (the broker away: a restart may succeed).

::

    AestreamError
    ├── ConfigError         a config file or key is wrong (at start-up)
    ├── DataError           an input file or its contents cannot be used (missing columns, too short)
    ├── TrainingError       a model could not be trained or calibrated
    ├── BundleError         a model bundle is missing, incomplete, altered or unreadable
    ├── LatentRecordError   a latent-stream record cannot be decoded
    ├── ReservoirError      a persisted reservoir cannot be read
    ├── AlertStateError     the alert state file cannot be read
    ├── DeliveryError       messages the broker did not acknowledge in time (their offsets stay uncommitted)
    └── InvalidReading      a message is not a valid reading (dead-lettered, never fatal)
"""

from __future__ import annotations

__all__ = [
    "AestreamError",
    "AlertStateError",
    "BundleError",
    "ConfigError",
    "DataError",
    "DeliveryError",
    "InvalidReading",
    "LatentRecordError",
    "ReservoirError",
    "TrainingError",
    "first_line",
]


def first_line(e: BaseException, default: str | None = None) -> str:
    """The first line of ``e``'s text, for a one-line error that quotes it (pandas and torch raise several);
    ``default`` (else the exception's type) when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else default or type(e).__name__


class AestreamError(Exception):
    """Root of aestream's errors."""


class ConfigError(AestreamError):
    """A configuration file or key is wrong; raised at start-up, before anything runs."""


class DataError(AestreamError, ValueError):
    """An input file or its contents cannot be used: missing columns, too few readings for one window."""


class TrainingError(AestreamError):
    """A model could not be trained or calibrated from the data it was given."""


class BundleError(AestreamError):
    """A model bundle is missing, incomplete, altered or unreadable."""


class LatentRecordError(AestreamError):
    """A record of the latent stream cannot be decoded."""


class ReservoirError(AestreamError):
    """A persisted reservoir cannot be read."""


class AlertStateError(AestreamError):
    """The alert state file cannot be read."""


class DeliveryError(AestreamError):
    """Messages sent were not acknowledged by the broker in time, or failed: the offsets of the records they came
    from are not committed, so those records are read again (at-least-once: nothing is lost, events may repeat)."""


class InvalidReading(AestreamError):
    """A message is not a valid reading. Carried to the dead-letter topic, never fatal to the loop.

    ``kind`` names the reason for the metrics: ``invalid`` (not a reading), ``oversized`` (above
    ``stream.max_message_bytes``) or ``future`` (event time beyond ``stream.max_future_ms``).
    """

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind
