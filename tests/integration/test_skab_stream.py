"""``aestream evaluate skab --stream`` as a user runs it: readings through the real broker, the real ``aestream run``
as a subprocess, events read back — and the same figures as the offline run of the same detector."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from skabdata import CFG, write_experiment

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_stream_and_offline_give_the_same_figures(kafka_bootstrap: str, tmp_path: Path) -> None:
    folder = tmp_path / "skab" / "valve9"
    for i, level in ((0, 0.0), (1, 5.0), (2, -8.0)):
        write_experiment(folder / f"{i}.csv", i, level)
    config = tmp_path / "config.toml"
    config.write_text(CFG.replace(kafka={"bootstrap_servers": (kafka_bootstrap,)}).to_toml())
    figures = {}
    for how in ("offline", "stream"):
        argv = [sys.executable, "-m", "aestream", "--config", str(config), "--log-level", "WARNING", "evaluate",
                "skab", str(tmp_path / "skab"), "--json", *(["--stream"] if how == "stream" else [])]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 0, proc.stderr[-3000:]
        figures[how] = json.loads(proc.stdout)
    offline, stream = figures["offline"], figures["stream"]
    assert (offline["transport"], stream["transport"]) == ("in-process", "kafka")
    assert [f["name"] for f in stream["files"]] == ["valve9/0", "valve9/1", "valve9/2"]
    assert stream["f1"] > 0.5
    assert abs(stream["f1"] - offline["f1"]) <= 0.01
    assert abs(stream["far"] - offline["far"]) <= 1.0 and abs(stream["mar"] - offline["mar"]) <= 1.0
    assert stream["unscored_points"] is None, "through Kafka a window that did not emit is not seen"
    assert isinstance(offline["unscored_points"], int)
