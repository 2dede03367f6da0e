"""The offline commands' files and flags: a column named and missing, a cell that is no number, an ``--out`` that
is a folder, a store with one damaged version. Each is one line and exit 2 (or, for ``models list``, a line of its
own), before the work where it can be."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from aestream.commands.cli import main
from aestream.config import Config
from aestream.detect.features import Preprocessor
from aestream.detect.scoring import Scorer
from aestream.models import build_model
from aestream.models.bundle import ModelBundle
from aestream.models.store import ModelStore


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config for two channels, windows of 4, and a store holding one small (untrained) model of them."""
    torch.manual_seed(0)
    model = build_model("vanilla", window_size=4, n_channels=2, latent_size=2, hidden_size=8)
    ModelStore(tmp_path / "models").publish(ModelBundle(Scorer(model, Preprocessor(
        np.zeros(2), np.ones(2), np.zeros(2, dtype=bool))), 2.0, ("a", "b")))
    cfg = Config().replace(stream={"channels": ("a", "b"), "window_size": 4, "stride": 1},
                           model={"detrend_channels": (), "device": "cpu", "epochs": 1},
                           paths={"model_dir": str(tmp_path / "models"), "state_dir": str(tmp_path / "state")})
    path = tmp_path / "config.toml"
    path.write_text(cfg.to_toml())
    return path


def _csv(tmp_path: Path, cell: str = "3") -> Path:
    rows = [f"{'p' if i % 2 else 'q'},{1000 * (i // 2)},{i},{cell if i == 9 else 2 * i}" for i in range(24)]
    data = tmp_path / "readings.csv"
    data.write_text("device,ts,a,b\n" + "\n".join(rows) + "\n")
    return data


@pytest.mark.parametrize(("flag", "name"), [("--sensor-column", "devcie"), ("--ts-column", "time")])
@pytest.mark.parametrize("command", ["train", "embed"])
def test_a_column_named_and_missing_is_refused_not_ignored(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, flag: str, name: str) -> None:
    data = _csv(tmp_path)
    args = [str(data), "--out", str(tmp_path / "e.parquet")] if command == "embed" else ["--input", str(data)]
    assert main(["--config", str(config), command, *args, flag, name]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"aestream: error: {flag} {name!r} is not a column of {data}; it has ['device', 'ts', "
                          f"'a', 'b']: name one of them, or leave {flag} out"), err
    assert ModelStore(tmp_path / "models").versions() == ["v0001"] and not (tmp_path / "e.parquet").exists()


def test_embed_with_the_sensor_column_named_keeps_each_sensor_s_readings(config: Path, tmp_path: Path) -> None:
    import pandas as pd

    out = tmp_path / "e.parquet"
    assert main(["--config", str(config), "embed", str(_csv(tmp_path)), "--sensor-column", "device",
                 "--out", str(out)]) == 0
    assert pd.read_parquet(out).groupby("sensor").size().to_dict() == {"p": 9, "q": 9}


def test_embed_names_a_cell_that_is_no_number(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for cell, what in (("bad", "holds 'bad', not a finite number,"), ("", "is empty")):
        assert main(["--config", str(config), "embed", str(_csv(tmp_path, cell)), "--sensor-column", "device",
                     "--out", str(tmp_path / "e.parquet")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"aestream: error: data column 'b' {what} at row 9"), err


@pytest.mark.parametrize("command", [["embed", "readings.csv"], ["report", "--events", "events.jsonl"]])
def test_an_out_that_is_a_folder_is_refused_before_the_work(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    _csv(tmp_path)
    (tmp_path / "events.jsonl").write_text("")
    (tmp_path / "folder").mkdir()
    argv = [a if not a.endswith((".csv", ".jsonl")) else str(tmp_path / a) for a in command]
    assert main(["--config", str(config), *argv, "--out", str(tmp_path / "folder")]) == 2
    assert capsys.readouterr().err.startswith(f"aestream: error: --out {tmp_path / 'folder'} is a folder: give a "
                                              "file name in it")


def test_models_list_shows_every_version_when_one_is_damaged(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ModelStore(tmp_path / "models")
    store.publish(store.load("v0001"))
    (tmp_path / "models" / "v0001" / "meta.json").write_text("garbage")
    assert main(["--config", str(config), "models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("  v0001  unreadable: model version v0001 in ") and "meta.json is unreadable" in lines[0]
    assert lines[1].startswith("* v0002  vanilla      threshold 2 "), lines


@pytest.mark.parametrize(("text", "columns"), [("temp\n1.5\n2.5\n", ["temp"]), ("value\n1\n", ["value"]),
                                              ("ts;a;b\n0;1,5;2\n", ["ts", "a", "b"]), ("a\tb\n1\t2\n", ["a", "b"])])
def test_a_csv_s_separator_is_found_also_for_one_column(tmp_path: Path, text: str, columns: list[str]) -> None:
    from aestream.training.datasets import read_table

    path = tmp_path / "data.csv"
    path.write_text(text)
    assert list(read_table(path).columns) == columns


def test_output_into_a_pipe_whose_reader_has_gone_ends_without_a_traceback(config: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "aestream", "--config", str(config), "models", "show"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # as `aestream models show | head -1` once head has its line
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1 and "Traceback" not in err and "BrokenPipeError" not in err, err


def _scored(values: np.ndarray, version: str, end_ms: int) -> Any:
    from aestream.stream.stages import Scored
    from aestream.stream.windows import Window

    return Scored(Window("pump-1", end_ms - 3000, end_ms, values.astype(np.float32)), 1.0, 2.0, False,
                  np.array([0.5, 0.5]), version)


def test_decode_prints_values_within_half_a_step_and_skips_versions_no_longer_stored(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import aestream.kafka.kafka_python as kafka_python
    from aestream.outputs.streams import StreamsStage, decode_latent

    bundle = ModelStore(tmp_path / "models").load("v0001")
    stage = StreamsStage(lambda: bundle, ("a", "b"), latent_topic="latent", latent_residual_step_std=1e-7)
    windows = np.random.default_rng(0).normal(3.0, 0.001, (3, 4, 2)).astype(np.float32)  # steps of 1e-7
    records = [m.value for i, w in enumerate(windows)
               for m in stage.on_scored([_scored(w, "v0009" if i == 1 else "v0001", 10_000 * (i + 1))])]

    def tail_topic(cfg: Any, topic: str, timeout_s: float, decode: Any, idle_s: float) -> Any:
        assert topic == "latent"
        return (decode(r) for r in records)

    monkeypatch.setattr(kafka_python, "tail_topic", tail_topic)
    assert main(["--config", str(config), "decode", "--topic", "latent"]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [d["window_end_ms"] for d in lines] == [10_000, 30_000], "v0009's record skipped, the others decoded"
    assert "the records of model v0009 are skipped: model version v0009 is not in" in err
    for d, w in zip(lines, windows[[0, 2]]):
        assert (np.abs(np.array(d["values"]) - w) <= 0.5e-7 * (1 + 1e-6)).all(), "rounded to 6 decimals: 5e-7"
    assert decode_latent(records[0]).model_version == "v0001"


def test_a_denoised_value_beyond_float32_s_range_passes_the_raw_reading_not_a_null(tmp_path: Path) -> None:
    import json

    from aestream.outputs.streams import StreamsStage

    torch.manual_seed(0)
    model = build_model("vanilla", window_size=4, n_channels=2, latent_size=2, hidden_size=8)
    wide = Preprocessor(np.zeros(2), np.array([1.0, 1e6]), np.zeros(2, dtype=bool))  # channel b: a wide spread
    bundle = ModelBundle(Scorer(model, wide), 2.0, ("a", "b"))
    stage = StreamsStage(lambda: bundle, ("a", "b"), denoised_topic="clean")
    window = np.zeros((4, 2))
    window[-1, 0] = 1e37  # a valid reading (float32 holds it); its reconstruction of b, in b's units, does not
    (msg,) = stage.on_scored([_scored(window, "v0001", 10_000)])
    doc = json.loads(msg.value)
    assert None not in doc["values"] and doc["denoised"] is False, doc


def test_train_refuses_a_model_dir_that_is_a_file_before_it_reads_or_trains(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("x")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[paths]\nmodel_dir = "{tmp_path / "afile"}"\n[model]\ndevice = "cpu"\n')
    assert main(["--config", str(cfg), "train", "--input", str(tmp_path / "not-read-yet.csv")]) == 2
    assert "the model store" in capsys.readouterr().err  # not the input file: the store is checked first
