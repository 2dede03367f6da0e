"""The SKAB protocol end to end on a small synthetic folder (the benchmark data is not needed), through the
worker in this process; tests/integration/test_skab_stream.py runs the same through Kafka and `aestream run`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from skabdata import CFG, write_experiment  # tests/evaluate, on the path by conftest

from aestream.commands.evaluate.skab import evaluate_folder, list_skab_files, run_skab
from aestream.errors import DataError


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for i, level in ((0, 0.0), (1, 5.0), (10, -8.0)):
        write_experiment(tmp_path / "skab" / f"{i}.csv", i, level)
    return tmp_path / "skab"


def test_files_are_listed_in_numeric_order(folder: Path) -> None:
    assert [p.stem for p in list_skab_files(folder)] == ["0", "1", "10"]


def test_skab_layout_lists_the_experiment_folders_without_anomaly_free(tmp_path: Path) -> None:
    for sub, name in (("valve1", "2"), ("valve1", "10"), ("other", "1"), ("anomaly-free", "anomaly-free")):
        write_experiment(tmp_path / sub / f"{name}.csv", 0)
    assert [p.relative_to(tmp_path).as_posix() for p in list_skab_files(tmp_path)] == [
        "other/1.csv", "valve1/2.csv", "valve1/10.csv"]


def test_missing_folder_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist: pass a folder"):
        list_skab_files(tmp_path / "nope")
    write_experiment(tmp_path / "0.csv", 0)
    with pytest.raises(DataError, match=r"0\.csv is a file, not a folder: pass a folder"):
        list_skab_files(tmp_path / "0.csv")


def test_a_folder_or_file_that_is_no_skab_data_is_one_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from aestream.commands.cli import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "1.csv").write_text("a;b\n1;2\n")
    for folder, message in (("nope", "does not exist: pass a folder"), ("empty", "holds no .csv file"),
                            ("bad", "cannot be read (Missing column provided to 'parse_dates': 'datetime')")):
        assert main(["evaluate", "skab", str(tmp_path / folder)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("aestream: error: SKAB ") and message in err and "Traceback" not in err, err


def test_a_cell_that_is_no_number_is_named_with_its_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from aestream.commands.cli import main

    path = tmp_path / "skab" / "0.csv"
    write_experiment(path, 0)
    lines = path.read_text().splitlines()
    head, row = lines[0].split(";"), lines[8].split(";")
    row[head.index("pressure")] = "bad"
    path.write_text("\n".join([*lines[:8], ";".join(row), *lines[9:]]) + "\n")
    config = tmp_path / "config.toml"
    config.write_text(CFG.to_toml())
    assert main(["--config", str(config), "evaluate", "skab", str(tmp_path / "skab")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"aestream: error: SKAB file {path}: data column 'pressure' holds 'bad', not a finite "
                          "number, at row 7 (from 0, after the header)"), err


def test_each_sensor_is_judged_by_its_own_baseline_and_the_shift_is_found(folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    metrics, results = evaluate_folder(folder, CFG, plot_dir=tmp_path / "png", predictions_dir=tmp_path / "pred")
    assert [r.name for r in results] == ["0", "1", "10"]
    for r in results:  # operating points 0, +5 and -8: each found its shift, none alarms at its normal start
        assert len(r.pred) == 160
        assert r.pred[55:60].all(), r.name
        assert not r.pred[:40].any(), r.name
    assert metrics["f1"] > 0.5 and metrics["nab_standard"] > 0 and metrics["transport"] == "in-process"
    assert metrics["unscored_points"] == 0  # no gap: every test point is a window's end
    written = pd.read_csv(tmp_path / "pred" / "0.csv")
    assert list(written.columns) == ["datetime", "anomaly", "changepoint", "pred"] and len(written) == 160
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["0.png", "1.png", "10.png"]


@pytest.mark.parametrize("mode", ["finetune", "shared"])
def test_a_fleet_model_from_one_operating_point_serves_sensors_at_others_only_with_baselines(
        folder: Path, tmp_path: Path, mode: str) -> None:
    normal = tmp_path / "normal.csv"
    write_experiment(normal, 7)
    frame = pd.read_csv(normal, sep=";")
    frame.iloc[:400].to_csv(normal, sep=";", index=False)  # normal operation at level 0 only
    _, off = evaluate_folder(folder, CFG.replace(baselines={"mode": "off"}), train_file=normal)
    _, on = evaluate_folder(folder, CFG.replace(baselines={"mode": mode}), train_file=normal)
    for a, b in zip(off, on):
        if a.name == "0":
            continue
        assert a.pred[:40].all(), a.name  # one scaler and threshold for all: the normal start is "anomalous"
        assert not b.pred[:40].any() and b.pred[55:60].all(), (mode, b.name)


def test_the_run_is_deterministic(folder: Path) -> None:
    a = run_skab(folder, CFG)
    b = run_skab(folder, CFG)
    for m in (a, b):
        m.pop("seconds")
    assert a == b


def test_too_short_files_are_refused(folder: Path) -> None:
    with pytest.raises(DataError, match=r"has 560 rows: need more than n_train=600"):
        evaluate_folder(folder, CFG, n_train=600)


def test_a_calibration_longer_than_the_training_rows_is_refused(folder: Path) -> None:
    cfg = CFG.replace(baselines={"n_readings": 501})
    with pytest.raises(DataError, match=r"baselines.n_readings = 501 is more than the 500 rows of each file"):
        evaluate_folder(folder, cfg, n_train=500)


def test_predictions_and_plots_of_the_skab_root_go_into_a_folder_per_group(tmp_path: Path) -> None:
    import numpy as np

    from aestream.commands.evaluate.plots import plot_results
    from aestream.commands.evaluate.skab import FileResult, write_predictions

    times = pd.date_range("2026-01-01", periods=4, freq="s")
    zeros = np.zeros(4, dtype=int)
    result = FileResult("valve1/0", times.to_numpy(), zeros, zeros, np.ones(4), 2.0, zeros)  # the root's naming
    write_predictions([result], tmp_path / "preds")
    plot_results([result], tmp_path / "plots")
    assert (tmp_path / "preds/valve1/0.csv").is_file() and (tmp_path / "plots/valve1/0.png").is_file()


def test_test_points_a_gap_left_without_a_window_are_counted(tmp_path: Path) -> None:
    folder = tmp_path / "skab"
    for i, level in ((0, 0.0), (1, 5.0)):
        write_experiment(folder / f"{i}.csv", i, level)
    frame = pd.read_csv(folder / "1.csv", sep=";")
    later = pd.to_datetime(frame["datetime"]) + pd.to_timedelta((frame.index >= 470) * 60, unit="s")
    frame["datetime"] = later.dt.strftime("%Y-%m-%d %H:%M:%S")  # a minute's silence before row 470 (test part)
    frame.to_csv(folder / "1.csv", sep=";", index=False)
    metrics, _ = evaluate_folder(folder, CFG)
    assert metrics["unscored_points"] == CFG.stream.window_size - 1  # the readings before the first full window


def test_json_stays_alone_on_stdout_when_a_local_broker_is_started(
        folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    import aestream.commands.demo as demo
    from aestream.commands.cli import main

    script = tmp_path / "kafka.sh"  # the local broker's start, failing after its announcement (no Java here)
    script.write_text("exit 3\n")
    monkeypatch.setattr(demo, "KAFKA_SCRIPT", script)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    config = tmp_path / "config.toml"
    config.write_text(CFG.replace(kafka={"bootstrap_servers": (f"127.0.0.1:{port}",)}).to_toml())
    assert main(["--config", str(config), "evaluate", "skab", str(folder), "--stream", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "", "a --json run prints its one object on stdout, nothing else"
    assert f"starting a local Kafka broker on 127.0.0.1:{port}" in err and "the local broker did not start" in err
