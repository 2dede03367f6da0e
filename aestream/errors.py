"""The error hierarchy: every error aestream raises on purpose is an :class:`AestreamError`.

Messages say what was wrong, the offending value, where, and what to do about it.
"""

from __future__ import annotations

__all__ = ["AestreamError", "BundleError", "ConfigError", "InvalidReading"]


class AestreamError(Exception):
    """Root of aestream's errors."""


class ConfigError(AestreamError):
    """A configuration file or key is wrong; raised at start-up, before anything runs."""


class BundleError(AestreamError):
    """A model bundle is missing, incomplete, altered or unreadable."""


class InvalidReading(AestreamError):
    """A message is not a valid reading. Carried to the dead-letter topic, never fatal to the loop."""
