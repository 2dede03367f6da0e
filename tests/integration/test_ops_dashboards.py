"""The Grafana dashboard and the Prometheus alerting rules in deploy/ name only metrics a running worker serves:
every metric name in their PromQL is checked against a real scrape of /metrics of a worker that
:func:`aestream.app.build_app` builds on the real broker, with readings flowing (so the labelled series exist).
promtool's checks of the same files are in tests/test_prometheus_rules.py."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from aestream.app import build_app
from aestream.commands.simulate import Plant
from aestream.config import Config
from aestream.models.store import ModelStore
from aestream.stream.codec import encode_reading

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "aestream.json"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
FROM_PROMETHEUS = {"up"}  # series Prometheus itself writes for each scrape target
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
             "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords, labels, strings or numbers)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\w+", " ", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", e):
        if not e[m.end():].lstrip().startswith("(") and m.group().lower() not in _KEYWORDS:
            names.add(m.group())
    return names


def test_metric_names_finds_the_metrics_and_nothing_else() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, instance) (rate(aestream_batch_duration_seconds_bucket'
            '{instance=~"$instance", le!="1e3"}[$__rate_interval]))) / on (instance) group_left () up offset 5m '
            '> 1e-3 or vector(0) unless absent(aestream_model_loaded)')
    assert metric_names(expr) == {"aestream_batch_duration_seconds_bucket", "up", "aestream_model_loaded"}


def exported_names(exposition: str) -> set[str]:
    """Every series name the exposition declares or holds: samples, each family's TYPE name and, for histograms,
    its _bucket, _count and _sum (a labelled family with no child yet has only its TYPE line)."""
    names = {line.split()[0].split("{")[0] for line in exposition.splitlines() if line and not line.startswith("#")}
    for m in re.finditer(r"^# TYPE (\S+) (\w+)$", exposition, re.M):
        names.add(m.group(1))
        if m.group(2) == "histogram":
            names |= {m.group(1) + s for s in ("_bucket", "_count", "_sum")}
    return names


def _dashboard_queries() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    queries = [(p["title"], t["expr"]) for p in doc["panels"] for t in p.get("targets", [])]
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            queries.append((f"variable {var['name']}", re.sub(r"^label_values\((\w+),.*$", r"\1",
                                                              var["definition"])))
    return queries


def _rule_queries() -> list[tuple[str, str]]:
    return [(r["alert"], r["expr"]) for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


@pytest.fixture()
def scraped(topics: Config, train_small: Any, kafka_tools: dict[str, Any]) -> set[str]:
    """The names on /metrics of a worker that has consumed readings and read its lag."""
    cfg = topics.replace(ops={"metrics_port": 0, "metrics_host": "127.0.0.1", "lag_interval_s": 0.2})
    ModelStore(cfg.paths.model_dir).publish(train_small(cfg))
    app = build_app(cfg)
    assert app.ops is not None
    thread = threading.Thread(target=app.worker.run, name="worker", daemon=True)
    thread.start()
    try:
        readings = Plant(2, cfg.stream.channels, seed=0).readings(40, 1_767_225_600_000)
        kafka_tools["produce"](cfg, [(s.encode(), encode_reading(s, ts, v)) for s, ts, v in readings])
        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(app.ops.url + "/metrics", timeout=5) as r:
                body = r.read().decode()
            if "aestream_consumer_lag{" in body and f"aestream_readings_total {len(readings)}.0" in body:
                return exported_names(body)
            assert time.monotonic() < deadline, "the worker did not consume the readings and read its lag in time"
            time.sleep(0.2)
    finally:
        app.worker.stop()
        thread.join(30)
        app.ops.stop()


def test_every_dashboard_query_names_only_metrics_the_worker_serves(scraped: set[str]) -> None:
    queries = _dashboard_queries()
    assert len(queries) >= 15
    for title, expr in queries:
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr}"
        assert names <= scraped, f"{title}: {sorted(names - scraped)} not served at /metrics"


def test_every_alert_rule_names_only_metrics_the_worker_or_prometheus_serves(scraped: set[str]) -> None:
    queries = _rule_queries()
    assert len(queries) >= 8
    for alert, expr in queries:
        names = metric_names(expr)
        assert names, f"{alert}: no metric in {expr}"
        assert names <= scraped | FROM_PROMETHEUS, f"{alert}: {sorted(names - scraped)} not served at /metrics"
