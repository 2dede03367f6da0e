"""Severity bands, routing rules, and the [alerts] config checks."""

from __future__ import annotations

from typing import Any

import pytest

from aestream.alerts import build_alert_stage
from aestream.alerts.routing import Router, WebhookSpec, parse_bands, parse_routes, parse_sinks
from aestream.config import parse_config
from aestream.errors import ConfigError

SINKS = {"topic", "log", "a", "b", "hook"}


def event(sensor: str = "pump-1", severity: str = "critical", kind: str = "opened",
          channels: tuple[str, ...] = ("vibration",)) -> dict[str, Any]:
    return {"type": kind, "sensor": sensor, "severity": severity,
            "channels": [{"name": c, "share": 0.5} for c in channels]}


BANDS = parse_bands({"warning": 1.0, "critical": 2.0})


def router(routes: list[dict[str, Any]], match: str = "first", tags: dict[str, Any] | None = None) -> Router:
    return Router(parse_routes(routes, SINKS, BANDS), match, ("topic",), tags)


def test_bands_are_ordered_by_floor_whatever_the_table_order() -> None:
    b = parse_bands({"critical": 2, "page": 10.0, "warning": 1.0})
    assert b.names == ("warning", "critical", "page")
    assert [b.severity(r) for r in (0.5, 1.0, 1.99, 2.0, 50.0)] == ["warning", "warning", "warning", "critical",
                                                                     "page"]


def test_first_match_stops_at_the_first_rule_and_all_collects_every_match() -> None:
    routes = [{"severity": "critical", "sensor": "pump-*", "sinks": ["a", "hook"]},
              {"severity": ["critical", "warning"], "sinks": ["b"]}]
    assert router(routes).sinks_for(event()) == ["a", "hook"]
    assert router(routes, "all").sinks_for(event()) == ["a", "hook", "b"]
    assert router(routes).sinks_for(event(severity="warning")) == ["b"]
    assert router(routes).sinks_for(event(severity="info")) == ["topic"]  # the default


def test_rules_match_on_regex_channel_tags_and_type() -> None:
    r = router([{"sensor_regex": r"pump-\d+", "channel": ["current"], "sinks": ["a"]},
                {"tags": ["rotating", "site-b"], "sinks": ["b"]},
                {"type": ["sensor_silent", "sensor_resumed"], "sinks": ["log"]}],
               tags={"fan-*": ["rotating"], "*-7": ["site-b"]})
    assert r.sinks_for(event("pump-12", channels=("current", "pressure"))) == ["a"]
    assert r.sinks_for(event("pump-12x", channels=("current",))) == ["topic"]  # fullmatch
    assert r.sinks_for(event("fan-7")) == ["b"]
    assert r.sinks_for(event("fan-8")) == ["topic"]  # only one of the two tags
    assert r.sinks_for(event("valve-1", kind="sensor_silent")) == ["log"]


def test_a_route_selects_calibration_events_by_type() -> None:
    r = router([{"type": "calibration_finished", "sinks": ["a"]}])
    assert r.sinks_for(event(severity="info", kind="calibration_finished")) == ["a"]
    assert r.sinks_for(event(severity="info", kind="calibration_started")) == ["topic"]
    assert r.sinks_for(event(severity="info", kind="sensor_silent")) == ["topic"]


def test_a_route_selects_the_configured_bands_and_info() -> None:
    bands = parse_bands({"warning": 1.0, "page": 5.0})
    r = Router(parse_routes([{"severity": "page", "sinks": ["a"]}, {"severity": "info", "sinks": ["b"]}], SINKS, bands))
    assert r.sinks_for(event(severity="page")) == ["a"]
    assert r.sinks_for(event(severity="info", kind="sensor_silent")) == ["b"]
    with pytest.raises(ConfigError) as e:
        parse_routes([{"severity": ["page", "critical"], "sinks": ["a"]}], SINKS, bands)
    assert str(e.value) == ("config key alerts.routes[0].severity = 'critical' is invalid: use one of warning, page, "
                            "info (the bands of [alerts.bands], and info for data-quality events)")


def test_sinks_have_builtins_and_webhook_headers_stay_out_of_repr() -> None:
    sinks = parse_sinks({"hook": {"type": "webhook", "url": "https://h.example/x?token=s3cret", "retries": 2,
                                  "headers": {"Authorization": "Bearer s3cret"}}}, "alerts")
    assert set(sinks) == {"topic", "log", "hook"}
    hook = sinks["hook"]
    assert isinstance(hook, WebhookSpec) and hook.retries == 2 and hook.timeout_s == 2.0
    assert "s3cret" not in repr(hook)


@pytest.mark.parametrize(("alerts", "message"), [
    ({"match": "any"}, "config key alerts.match = 'any' is invalid: use \"first\" or \"all\""),
    ({"bands": {"warning": "high"}}, "config key alerts.bands.warning = 'high' is invalid: use a ratio of 0 or more"),
    ({"routes": [{"severity": "critical"}]}, "config key alerts.routes[0].sinks is missing"),
    ({"routes": [{"channel": ["Current", "Voltag"], "sinks": ["topic"]}]},
     "config key alerts.routes[0].channel names 'Voltag', which is not a channel: use some of stream.channels"),
    ({"routes": [{"sinks": ["pager"]}]},
     "config key alerts.routes[0].sinks names 'pager', which is not a sink: define [alerts.sinks.pager]"),
    ({"routes": [{"sinks": ["topic"], "sevrity": "critical"}]}, "unknown config key alerts.routes[0].sevrity"),
    ({"routes": [{"sinks": ["topic"], "sensor_regex": "pump-("}]},
     "config key alerts.routes[0].sensor_regex = 'pump-(' is invalid"),
    ({"routes": [{"sinks": ["topic"], "type": "anomaly"}]},
     "config key alerts.routes[0].type = 'anomaly' is invalid: use one of opened, updated, resolved"),
    ({"routes": [{"sinks": ["topic"], "severity": "critcal"}]},
     "config key alerts.routes[0].severity = 'critcal' is invalid: use one of warning, critical, info"),
    ({"sinks": {"pager": {"type": "webhook", "url": "ftp://x"}}},
     "config key alerts.sinks.pager.url is invalid: use an http:// or https:// URL"),
    ({"sinks": {"pager": {"type": "webhook", "url": "http://x", "retries": -1}}},
     "config key alerts.sinks.pager.retries = -1 is invalid: use a whole number of 0 or more"),
    ({"sinks": {"pager": {"type": "email"}}}, "config key alerts.sinks.pager.type = 'email' is invalid"),
    ({"sinks": {"b": {"type": "topic"}}}, "config key alerts.sinks.b.topic = None is invalid: name the topic"),
    ({"default_sinks": ["nowhere"]}, "config key alerts.default_sinks names 'nowhere', which is not a sink"),
    ({"tags": {"pump-*": "rotating"}}, "config key alerts.tags.pump-* = 'rotating' is invalid: use a list"),
    ({"n_resolve_windows": 0}, "config key alerts.n_resolve_windows = 0 is invalid: use 1 or more windows"),
])
def test_bad_alert_config_says_which_key_and_how_to_fix_it(alerts: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:  # the tables are checked when the alert stage is built, at start-up
        build_alert_stage(parse_config({"alerts": alerts}))
    assert message in str(e.value)


def test_a_full_alerts_table_parses() -> None:
    cfg = parse_config({"alerts": {
        "enabled": True, "match": "all", "bands": {"warning": 1, "critical": 3},
        "sinks": {"a": {"type": "topic", "topic": "alerts-critical"},
                  "pager": {"type": "webhook", "url": "http://127.0.0.1:9/hook", "timeout_s": 1}},
        "routes": [{"severity": "critical", "sensor": "pump-*", "sinks": ["a", "pager"]}],
        "tags": {"pump-*": ["rotating"]}}})
    assert cfg.alerts.routes[0]["sinks"] == ["a", "pager"] and cfg.alerts.bands["critical"] == 3
