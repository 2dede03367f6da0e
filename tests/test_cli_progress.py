"""Progress bars on a terminal: the commands that work for more than a few seconds draw them on stderr, and their
machine-readable stdout (``train``'s JSON line, ``evaluate --json``'s one object) stays exactly that. Each command
runs as a subprocess whose stderr is a pseudo-terminal and whose stdout is a pipe, as in ``aestream … | jq``."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
[stream]
channels = ["flow", "pressure"]
window_size = 16
[model]
family = "vanilla"
epochs = 12
patience = 12
latent_size = 2
hidden_size = 8
device = "cpu"
detrend_channels = []
input_smoothing = 1
[paths]
model_dir = "{tmp}/models"
state_dir = "{tmp}/state"
[retrain]
n_min_windows = 100
"""


def _on_a_terminal(args: list[str], cwd: Path) -> tuple[str, str, int]:
    """Run ``python -m aestream ARGS`` with stderr on a pseudo-terminal; ``(stdout, terminal output, exit code)``."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a new pty is 0 columns wide
    proc = subprocess.Popen([sys.executable, "-m", "aestream", "--log-level", "WARNING", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=slave, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            text=True)
    os.close(slave)
    seen = bytearray()
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=300)
    os.close(master)
    return out, seen.decode(errors="replace"), proc.returncode


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(tmp=tmp_path))
    return path


def test_train_draws_its_epochs_on_the_terminal_and_prints_one_json_line(tmp_path: Path, config: Path) -> None:
    t = np.arange(600)
    pd.DataFrame({"flow": np.sin(t / 7), "pressure": np.cos(t / 5)}).to_csv(tmp_path / "normal.csv", index=False)
    out, terminal, code = _on_a_terminal(["--config", str(config), "train", "--input", "normal.csv"], tmp_path)
    assert code == 0, terminal
    assert json.loads(out)["version"] == "v0001" and len(out.splitlines()) == 1
    assert "training:" in terminal and "epoch" in terminal


def test_evaluate_json_stays_one_object_while_the_files_bar_draws(tmp_path: Path, config: Path) -> None:
    folder = tmp_path / "skab"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in (1, 2):
        t = np.arange(480)
        frame = pd.DataFrame({
            "datetime": pd.date_range("2020-03-09 10:00:00", periods=len(t), freq="s").strftime("%Y-%m-%d %H:%M:%S"),
            "flow": np.sin(t / 7) + 0.1 * rng.standard_normal(len(t)),
            "pressure": np.cos(t / 5) + 0.1 * rng.standard_normal(len(t)), "anomaly": 0.0, "changepoint": 0.0})
        frame.loc[430:460, "flow"] += 4.0
        frame.loc[430:460, "anomaly"] = 1.0
        frame.to_csv(folder / f"{i}.csv", sep=";", index=False)
    out, terminal, code = _on_a_terminal(["--config", str(config), "evaluate", "skab", str(folder), "--json"],
                                         tmp_path)
    assert code == 0, terminal
    assert len(out.splitlines()) == 1 and {"f1", "far", "mar", "files"} <= set(json.loads(out))
    assert "SKAB:" in terminal and "file" in terminal


def test_a_foreground_retrain_draws_the_bar_of_its_training_subprocess(tmp_path: Path, config: Path) -> None:
    from aestream.config import load_config
    from aestream.retrain.retrainer import open_reservoir

    reservoir, path = open_reservoir(load_config(config))
    rng, t = np.random.default_rng(0), np.arange(16)
    for i in range(300):
        window = np.stack([np.sin((t + i) / 7), np.cos((t + i) / 5)], axis=1) + 0.05 * rng.standard_normal((16, 2))
        reservoir.add("s", 1_767_225_600_000 + i * 1000, window)
    reservoir.save(path)
    out, terminal, code = _on_a_terminal(["--config", str(config), "retrain"], tmp_path)
    assert json.loads(out)["status"] in ("published", "rejected") and len(out.splitlines()) == 1, terminal
    assert code == (0 if json.loads(out)["status"] == "published" else 1)
    assert "training:" in terminal and "epoch" in terminal  # drawn by the spawned training process
