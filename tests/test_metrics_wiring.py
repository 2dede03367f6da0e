from __future__ import annotations

from pathlib import Path

from aestream.config import Config
from aestream.models.store import ModelStore
from aestream.ops.metrics import Metrics
from aestream.retrain.retrainer import Retrainer, open_reservoir


def test_a_retrain_outcome_reaches_the_metrics(tmp_path: Path) -> None:
    cfg = Config().replace(paths={"model_dir": str(tmp_path / "m"), "state_dir": str(tmp_path / "s")},
                           retrain={"enabled": True})
    reservoir, _ = open_reservoir(cfg)
    metrics = Metrics()
    retrainer = Retrainer(cfg, reservoir, ModelStore(cfg.paths.model_dir),
                          on_outcome=lambda o: metrics.retrain(o.status, o.seconds))
    assert retrainer.run_once(force=True).status == "skipped"  # an empty reservoir
    assert 'aestream_retrains_total{outcome="skipped"} 1.0' in metrics.exposition().decode()
