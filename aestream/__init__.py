"""aestream: a streaming sensor anomaly detector built on Kafka and torch autoencoders."""

from aestream.errors import AestreamError, BundleError, ConfigError, InvalidReading

__all__ = ["AestreamError", "BundleError", "ConfigError", "InvalidReading", "__version__"]

__version__ = "0.1.0"
