"""The benchmarks that run in seconds, run as a user runs them: a script that cannot start is no benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_baselines_benchmark_prints_its_json_line_for_a_small_fleet() -> None:
    """It named sensors sensor-0/sensor-000 where the plant names them sensor-00: a KeyError at 6 or 200 sensors
    (its default), only 11 to 100 ran."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "baselines.py"), "--sensors", "6",
                          "--readings", "160"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["sensors"] == 6 and line["shared"]["calibrated"] == 6
