"""The demo's story on the real broker: episodes as they open and resolve, the table of injected anomalies, the
false episodes, the report, in at most about 40 lines (a small model, so it runs in well under a minute)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from aestream.commands.demo import run_demo
from aestream.config import Config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_demo_tells_each_episode_and_ends_with_the_table_and_the_report(
        kafka_config: Config, tmp_path: Path) -> None:
    cfg = kafka_config.replace(model={"family": "vanilla", "epochs": 25, "hidden_size": 32, "latent_size": 6,
                                      "torch_threads": 1, "device": "cpu"})
    out = io.StringIO()
    result = run_demo(cfg, out=out, n_sensors=4)
    lines = out.getvalue().splitlines()
    print(out.getvalue())

    assert len(lines) <= 40, "\n".join(lines)
    assert result.injected == 4 and result.detected == 4, "\n".join(lines)
    assert lines[-1] == "detected 4 of 4 injected anomalies"
    assert any(line.startswith("model v0001 trained in ") and " s on cpu; threshold " in line for line in lines)
    opened = [line for line in lines if " episode opened " in line]
    resolved = [line for line in lines if " episode resolved " in line]
    assert {line.split()[3] for line in opened} >= {"sensor-00", "sensor-01", "sensor-02", "sensor-03"}
    assert len(opened) == result.episodes and len(resolved) <= len(opened)
    assert result.episodes - result.false_episodes == 4  # each injected anomaly opened an episode of its own
    assert all("top channels:" in line for line in opened)
    header = lines.index(next(line for line in lines if line.startswith("injected ")))
    rows = lines[header + 1: header + 5]
    assert [r.split()[:2] for r in rows] == [["shift", "sensor-00"], ["decouple", "sensor-01"],
                                             ["oscillation", "sensor-02"], ["shift", "sensor-03"]]
    assert all(r.split()[-3] == "yes" and r.endswith(" s") for r in rows), rows
    assert [d.delay_s is not None and d.delay_s >= 0 for d in result.detections] == [True] * 4
    assert any(line.startswith(f"false episodes: {result.false_episodes} of {result.episodes} ") for line in lines)
    assert result.report is not None and result.report.is_file()
    page = result.report.read_text()
    assert "episodes" in page and "data:image/png;base64," in page
    assert f"report: {result.report.resolve()} " in out.getvalue()
    assert Path(cfg.paths.state_dir) in result.report.parents
