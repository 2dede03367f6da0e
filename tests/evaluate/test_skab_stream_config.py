"""What ``evaluate skab --stream`` hands to its ``aestream run``: the config file and environment (no broker)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from skabdata import CFG, write_experiment

import aestream.commands.demo as demo
import aestream.kafka.kafka_python as kp
from aestream.commands.evaluate import skab
from aestream.config import load_config


class _Sink:
    def send(self, msg: Any) -> None: ...
    def flush(self, timeout_s: float = 60.0) -> None: ...
    def close(self, timeout_s: float = 10.0) -> None: ...


def test_the_run_reads_from_the_start_serves_the_published_model_and_alerts_no_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "skab"
    write_experiment(folder / "0.csv", 0)
    seen: dict[str, Any] = {}

    def fake_run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        seen["cfg"] = load_config(argv[argv.index("--config") + 1], kw.get("env"))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(demo, "start_local_broker", lambda *a, **k: False)
    monkeypatch.setattr(kp, "wait_for_broker", lambda *a, **k: None)
    monkeypatch.setattr(kp, "ensure_topics", lambda *a, **k: None)
    monkeypatch.setattr(kp, "open_sink", lambda *a, **k: _Sink())
    monkeypatch.setattr(kp, "tail_topic", lambda *a, **k: iter(()))
    monkeypatch.setattr(skab.subprocess, "run", fake_run)
    monkeypatch.delenv("AESTREAM_KAFKA_SASL_PASSWORD", raising=False)
    cfg = CFG.replace(kafka={"auto_offset_reset": "latest", "security_protocol": "SASL_PLAINTEXT",
                             "sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "from-the-file"},
                      alerts={"enabled": True}, streams={"denoised_topic": "denoised"})
    skab.evaluate_folder(folder, cfg, stream=True)
    run = seen["cfg"]
    assert run.kafka.auto_offset_reset == "earliest"  # the readings were published before the run started
    assert run.kafka.sasl_password == "from-the-file"  # to_toml leaves secrets out
    assert not run.alerts.enabled and run.streams.denoised_topic == ""  # as the in-process worker: no stages
    assert run.fleet.models == "directory"  # where the bundle is published
