"""The operators' files in deploy/ checked with the real promtool: the alerting rules parse (`promtool check
rules`), fire when and only when their unit tests say (`promtool test rules`), every rule has such a test, the
Prometheus config that loads them is valid, and every query of the Grafana dashboard is valid PromQL.

promtool comes from `make promtool` (deploy/prometheus/promtool.sh, a dependency of `make test`). Without it these
tests skip on a workstation and fail under CI (CI=true), so a CI run can never pass by skipping them. Which metric
names the rules and the dashboard may use is checked against a running worker in
tests/integration/test_ops_dashboards.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "aestream.json"
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h", "$instance": ".*"}


def find_promtool() -> str | None:
    """``$PROMTOOL`` when set (even to nothing usable), else promtool on PATH, else ``.venv/bin/promtool``."""
    if "PROMTOOL" in os.environ:
        candidates = [os.environ["PROMTOOL"]]
    else:
        candidates = [shutil.which("promtool") or "", str(ROOT / ".venv" / "bin" / "promtool")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="module")
def promtool() -> str:
    found = find_promtool()
    if found is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("promtool is missing and CI is set: run `make promtool` (deploy/prometheus/promtool.sh), "
                        "which `make test` does first")
        pytest.skip("promtool not found: `make promtool` puts it in .venv/bin (`make test` does this first)")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, cwd=ROOT)


def _alerts() -> list[dict[str, object]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_check_rules_passes_on_every_rule(promtool: str) -> None:
    proc = _run(promtool, "check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in proc.stdout


def test_the_rules_fire_as_their_unit_tests_expect(promtool: str) -> None:
    proc = _run(promtool, "test", "rules", str(RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_unit_test_in_which_it_fires() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing = {t["alertname"] for case in cases for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert {str(a["alert"]) for a in _alerts()} == firing


def test_every_alert_says_how_bad_and_what_to_look_at() -> None:
    for rule in _alerts():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]  # type: ignore[index]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]  # type: ignore[index]


def test_the_prometheus_config_loads_the_rules(promtool: str) -> None:
    proc = _run(promtool, "check", "config", str(ROOT / "deploy" / "prometheus.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 rule files found" in proc.stdout and f"{len(_alerts())} rules found" in proc.stdout


def dashboard_queries() -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` of every panel target of the dashboard."""
    doc = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in doc["panels"] for t in p.get("targets", [])]


def test_every_dashboard_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 15
    rules = []
    for i, (_, expr) in enumerate(queries):
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = _run(promtool, "check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_under_ci_a_missing_promtool_fails_instead_of_skipping(tmp_path: Path) -> None:
    env = {**os.environ, "PROMTOOL": str(tmp_path / "no-promtool"), "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "check_rules",
            str(Path(__file__))]
    ci = subprocess.run(args, capture_output=True, text=True, timeout=120, env={**env, "CI": "true"}, cwd=ROOT)
    assert ci.returncode == 1 and re.search(r"\b1 (failed|error)\b", ci.stdout), ci.stdout  # a fixture failing: error
    assert "promtool is missing and CI is set" in ci.stdout
    here = subprocess.run(args, capture_output=True, text=True, timeout=120, env={**env, "CI": ""}, cwd=ROOT)
    assert here.returncode == 0 and re.search(r"\b1 skipped\b", here.stdout), here.stdout
