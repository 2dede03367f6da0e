"""The package's public names, pinned: a change to them is a deliberate API change (update this list)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PUBLIC = {
    "aestream.instrumented": ["LagSource", "WorkerState", "instrument", "readiness_checks", "start_ops_server"],
    "aestream.metrics": ["BATCH_BUCKETS_S", "Metrics", "RETRAIN_BUCKETS_S", "SEVERITIES"],
    "aestream.ops": ["OpsServer", "broker_check", "split_host_port", "tcp_reachable"],
    "aestream": ["AestreamError", "BundleError", "ConfigError", "InvalidReading", "__version__"],
    "aestream.bundle": ["BUNDLE_FILES", "ModelBundle", "load_bundle", "save_bundle"],
    "aestream.codec": ["Block", "Columns", "Reading", "ReadingDecoder", "encode_reading", "parse_ts_ms"],
    "aestream.config": [
        "AlertsConfig",
        "Config",
        "KafkaConfig",
        "ModelConfig",
        "OpsConfig",
        "PathsConfig",
        "RetrainConfig",
        "StreamConfig",
        "StreamsConfig",
        "ThresholdConfig",
        "load_config",
        "parse_config",
    ],
    "aestream.errors": ["AestreamError", "BundleError", "ConfigError", "InvalidReading"],
    "aestream.events": [
        "SCHEMA_ID",
        "anomaly_event",
        "encode_event",
        "event_id",
        "iso_ms",
        "severity_of",
        "window_fields",
    ],
    "aestream.features": ["Preprocessor", "trailing_mean"],
    "aestream.fitting": ["calibrate_threshold", "fit_from_config", "train_bundle"],
    "aestream.messages": ["Outgoing", "Partition", "Record"],
    "aestream.models": ["Autoencoder", "FAMILIES", "build_model"],
    "aestream.phase": ["METADATA_MAX_BYTES", "PhaseCheckpoint", "decode_phases", "encode_phases",
                       "warn_metadata_refused"],
    "aestream.scoring": ["ScoreBatch", "Scorer", "resolve_device"],
    "aestream.stages": ["Scored", "Stage"],
    "aestream.store": ["ModelStore"],
    "aestream.streams": [
        "LatentCode",
        "MAX_RESIDUAL",
        "StreamsStage",
        "decode_latent",
        "decode_window",
        "encode_latent",
        "quantise_residual",
        "residual_steps",
    ],
    "aestream.thresholds": ["AlarmRule", "causal_smooth", "pot_threshold", "quantile_threshold"],
    "aestream.training": ["TrainResult", "fit_scorer", "sliding_windows"],
    "aestream.windows": ["LATE", "Window", "Windower"],
    "aestream.worker": ["ModelSource", "Sink", "Source", "StepStats", "Worker", "dead_letter"],
    "aestream.kafka_io": [
        "KafkaSink",
        "KafkaSource",
        "client_options",
        "ensure_topics",
        "open_sink",
        "open_source",
        "tail_topic",
        "wait_for_broker",
    ],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_are_pinned_and_exist(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == PUBLIC[module]
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.__all__ names {name}, which it does not define"


def test_only_the_kafka_edge_imports_a_kafka_client() -> None:
    root = Path(importlib.import_module("aestream").__file__).parent  # type: ignore[arg-type]
    edge = {"kafka_io.py", "kafka_confluent.py"}
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        if path.name not in edge:
            assert not names & {"kafka", "confluent_kafka"}, f"{path.relative_to(root)} imports a Kafka client"
