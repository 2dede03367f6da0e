"""The SKAB protocol end to end on a small synthetic folder (the benchmark data is not needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aestream.commands.evaluate.skab import detect_file, evaluate_folder, list_skab_files, load_skab_file, run_skab
from aestream.config import ModelConfig, ThresholdConfig

MODEL = ModelConfig(family="vanilla", epochs=15, latent_size=4, hidden_size=32, device="cpu",
                    detrend_channels=("temp",))
THRESHOLD = ThresholdConfig(quantile=0.99, factor=1.5, k=1, n=5)


def _write_experiment(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 560
    t = np.arange(n)
    frame = pd.DataFrame({
        "datetime": pd.date_range("2020-03-09 10:00:00", periods=n, freq="s").strftime("%Y-%m-%d %H:%M:%S"),
        "flow": np.sin(t / 7) + 0.1 * rng.standard_normal(n),
        "pressure": np.cos(t / 5) + 0.1 * rng.standard_normal(n),
        "temp": 20 + t / 100 + 0.05 * rng.standard_normal(n),
        "anomaly": 0.0,
        "changepoint": 0.0,
    })
    frame.loc[450:509, "flow"] += 4.0
    frame.loc[450:509, "anomaly"] = 1.0
    frame.loc[[450, 510], "changepoint"] = 1.0
    frame.to_csv(path, sep=";", index=False)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for i in (0, 1, 10):
        _write_experiment(tmp_path / f"{i}.csv", i)
    return tmp_path


def test_files_are_listed_in_numeric_order(folder: Path) -> None:
    assert [p.stem for p in list_skab_files(folder)] == ["0", "1", "10"]


def test_missing_folder_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist: pass a folder"):
        list_skab_files(tmp_path / "nope")


def test_every_test_point_gets_a_causal_prediction(folder: Path) -> None:
    r = detect_file(load_skab_file(folder / "0.csv"), MODEL, THRESHOLD, 16, name="0")
    assert len(r.pred) == len(r.scores) == len(r.times) == 160
    assert set(np.unique(r.pred)) <= {0, 1}
    assert r.pred[55:60].all()  # the planted level shift is found
    assert not r.pred[:40].any()


def test_evaluate_folder_writes_predictions_and_plots(folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    metrics, _ = evaluate_folder(folder, MODEL, THRESHOLD, 16, plot_dir=tmp_path / "png",
                                       predictions_dir=tmp_path / "pred")
    assert metrics["f1"] > 0.5 and metrics["nab_standard"] > 0
    assert [f["name"] for f in metrics["files"]] == ["0", "1", "10"]
    written = pd.read_csv(tmp_path / "pred" / "0.csv")
    assert list(written.columns) == ["datetime", "anomaly", "changepoint", "pred"]
    assert len(written) == 160
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["0.png", "1.png", "10.png"]
    assert run_skab(folder, MODEL, THRESHOLD, 16) == metrics


def test_too_short_training_part_is_refused(folder: Path) -> None:
    with pytest.raises(ValueError, match=r"lower stream\.window_size"):
        detect_file(load_skab_file(folder / "0.csv"), MODEL, THRESHOLD, 300)
