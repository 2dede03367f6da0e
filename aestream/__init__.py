"""aestream: a streaming sensor anomaly detector built on Kafka and torch autoencoders.

The names a program embeds the worker with; everything else is internal and may change between releases::

    import aestream

    cfg = aestream.load_config("config.toml")
    app = aestream.build_app(cfg)      # the worker aestream run builds: Kafka clients, stages, metrics
    app.run()                          # until app.stop()

They are imported on first use, so that ``import aestream.stream.codec`` (kafka-python's fetch process) does not
load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_WHERE = {
    "App": "aestream.app", "build_app": "aestream.app",
    "Config": "aestream.config", "load_config": "aestream.config",
    **dict.fromkeys(("AestreamError", "AlertStateError", "BundleError", "ConfigError", "DataError", "InvalidReading",
                     "LatentRecordError", "ReservoirError", "TrainingError"), "aestream.errors"),
    "ModelBundle": "aestream.models.bundle", "ModelStore": "aestream.models.store",
    "Outgoing": "aestream.stream.messages", "Record": "aestream.stream.messages",
    "Scored": "aestream.stream.stages", "Stage": "aestream.stream.stages",
    "train_bundle": "aestream.training.build",
    "StepStats": "aestream.worker", "Worker": "aestream.worker", "WorkerObserver": "aestream.worker",
}

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


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'aestream' has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
