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


def test_every_retrain_outcome_and_webhook_sink_is_served_at_0_before_its_first_count() -> None:
    # Prometheus's increase() sees no rise in a series born at 1: the first failed retrain or webhook give-up would
    # fire no alert (deploy/prometheus/rules.yml)
    from aestream.app import _Null, build_app
    from aestream.ops.metrics import RetrainMetrics

    trainer = RetrainMetrics()
    for outcome in ("published", "rejected", "failed", "skipped"):
        assert trainer.value("aestream_retrains_total", outcome=outcome) == 0.0
        assert trainer.value("aestream_retrain_duration_seconds_count", outcome=outcome) == 0.0
    cfg = Config().replace(alerts={"enabled": True, "default_sinks": ("pager",),
                                   "sinks": {"pager": {"type": "webhook", "url": "http://127.0.0.1:9/hook"}}},
                           ops={"metrics_enabled": False})
    app = build_app(cfg, source=_Null(), sink=_Null(), models=_Null())
    assert app.metrics.value("aestream_webhook_failures_total", sink="pager") == 0.0
