"""The README and docs/: the configuration reference is the one config.toml generates (fails while stale), every
key is explained, the README stays a newcomer's page (at most 300 lines), no text cites an issue number, and every
relative link (and its #anchor) leads somewhere."""

from __future__ import annotations

import doctest
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_configuration", DOCS / "gen_configuration.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configuration_reference_is_the_one_config_toml_generates() -> None:
    page = _generator().generate((ROOT / "config.toml").read_text(encoding="utf-8"))
    assert (DOCS / "configuration.md").read_text(encoding="utf-8") == page, (
        "docs/configuration.md is stale: run python docs/gen_configuration.py")


def test_the_reference_follows_the_comments_and_values_of_config_toml() -> None:
    gen = _generator()
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    edited = text.replace("# readings per window", "# readings in one window").replace(
        "window_size = 40 ", "window_size = 32 ")
    assert edited != text
    assert "| `stream.window_size` | `32` | readings in one window |" in gen.generate(edited)
    assert doctest.testmod(gen).failed == 0


def test_every_key_of_config_toml_is_explained() -> None:
    rows = re.findall(r"^\| `([\w.\-]+)` \| `.*` \| (.*) \|$", (DOCS / "configuration.md").read_text(), re.M)
    assert len(rows) > 90
    assert [key for key, meaning in rows if not meaning.strip()] == []


def test_the_readme_is_a_page_a_newcomer_reads() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    headings = re.findall(r"^## (.+)$", text, re.M)
    for wanted in ("The two commands", "Running it on your data", "Configuration", "Guarantees", "Scaling out",
                   "Operations", "Per-sensor baselines", "Detection quality: SKAB", "Performance", "Layout",
                   "Changelog"):
        assert wanted in headings


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_text_cites_an_issue_number(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert re.findall(r"\bissues?\s*#?\d+|(?<![\w/&])#\d+\b", text, re.I) == []


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    out = set()
    for heading in re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")
        out.add(slug)
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_leads_to_a_file_and_heading(page: Path) -> None:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: {link}"
        if anchor:
            assert anchor in _anchors(target), f"{page.name}: {link}"


def test_the_operations_page_lists_every_metric_a_worker_serves() -> None:
    from aestream.ops.metrics import Metrics

    # a scrape names an info metric NAME_info, and a counter NAME_total
    served = {m.name + "_info" if m.type == "info" else m.name for m in Metrics().registry.collect()}
    page = (DOCS / "operations.md").read_text(encoding="utf-8")
    listed = {n.removesuffix("_total") for n in re.findall(r"^\| `(aestream_\w+)` \|", page, re.M)}
    assert served == listed, f"served only: {sorted(served - listed)}; listed only: {sorted(listed - served)}"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_anomaly_event_shown_in_the_docs_is_valid_under_its_schema(page: Path) -> None:
    import json

    import jsonschema

    schema = json.loads((ROOT / "aestream/schemas/anomaly-event.v1.json").read_text(encoding="utf-8"))
    check = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    for block in re.findall(r"```json\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
        if '"schema": "aestream.event/1"' in block and '"type": "anomaly"' in block:
            doc = json.loads(block)
            assert not list(check.iter_errors(doc)), [e.message for e in check.iter_errors(doc)]


def test_the_sample_events_file_holds_anomaly_events_valid_under_their_schema() -> None:
    """docs/sample-events.jsonl, which operations.md feeds to `aestream report` (docs/make_report.py writes it)."""
    import json

    import jsonschema

    schema = json.loads((ROOT / "aestream/schemas/anomaly-event.v1.json").read_text(encoding="utf-8"))
    check = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    lines = (ROOT / "docs/sample-events.jsonl").read_text(encoding="utf-8").splitlines()
    anomalies = [doc for doc in map(json.loads, lines) if doc.get("type") == "anomaly"]
    assert len(anomalies) > 100
    bad = [(doc["event_id"], [e.message for e in check.iter_errors(doc)]) for doc in anomalies
           if not check.is_valid(doc)]
    assert bad == []
