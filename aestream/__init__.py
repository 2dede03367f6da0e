"""aestream: a streaming sensor anomaly detector built on Kafka and torch autoencoders.

The names a program embeds the worker with; everything else is internal and may change between releases::

    import aestream

    cfg = aestream.load_config("config.toml")
    app = aestream.build_app(cfg)      # the worker aestream run builds: Kafka clients, stages, metrics
    app.run()                          # until app.stop()
"""

from aestream.app import App, build_app
from aestream.config import Config, load_config
from aestream.errors import (
    AestreamError,
    AlertStateError,
    BundleError,
    ConfigError,
    DataError,
    InvalidReading,
    LatentRecordError,
    ReservoirError,
    TrainingError,
)
from aestream.models.bundle import ModelBundle
from aestream.models.store import ModelStore
from aestream.stream.messages import Outgoing, Record
from aestream.stream.stages import Scored, Stage
from aestream.training.build import train_bundle
from aestream.worker import StepStats, Worker, WorkerObserver

__all__ = [
    "AestreamError",
    "AlertStateError",
    "App",
    "BundleError",
    "Config",
    "ConfigError",
    "DataError",
    "InvalidReading",
    "LatentRecordError",
    "ModelBundle",
    "ModelStore",
    "Outgoing",
    "Record",
    "ReservoirError",
    "Scored",
    "Stage",
    "StepStats",
    "TrainingError",
    "Worker",
    "WorkerObserver",
    "__version__",
    "build_app",
    "load_config",
    "train_bundle",
]

__version__ = "0.1.0"
