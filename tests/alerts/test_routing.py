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


def test_a_header_with_a_line_break_is_refused_without_showing_its_value() -> None:
    with pytest.raises(ConfigError) as e:  # a multi-line TOML string: http.client would refuse it at every POST
        parse_sinks({"hook": {"type": "webhook", "url": "https://h.example/x",
                              "headers": {"Authorization": "Bearer s3cret\n"}}}, "alerts")
    assert str(e.value).startswith("config key alerts.sinks.hook.headers.Authorization is invalid: a header name or "
                                   "value holds a line break or NUL") and "s3cret" not in str(e.value)


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


def test_a_band_may_start_at_zero_and_a_name_that_is_no_band_ranks_below_every_band() -> None:
    b = parse_bands({"notice": 0, "warning": 1.0})
    assert b.severity(0.0) == "notice" and b.floors == (0.0, 1.0)
    assert (b.rank("notice"), b.rank("warning"), b.rank("critical")) == (0, 1, -1)


def test_a_rule_matches_any_of_its_sensor_globs_case_sensitively() -> None:
    r = router([{"sensor": ["fan-*", "pump-*"], "sinks": ["a"]}])
    assert r.sinks_for(event("fan-1")) == ["a"]
    assert r.sinks_for(event("pump-1")) == ["a"]
    assert r.sinks_for(event("Pump-1")) == ["topic"]


def test_a_rule_with_a_channel_needs_one_of_them_among_the_events_channels() -> None:
    r = router([{"sensor_regex": r"pump-\d+", "channel": ["current", "vibration"], "sinks": ["a"]}])
    assert r.sinks_for(event("pump-12", channels=("pressure", "vibration"))) == ["a"]
    assert r.sinks_for(event("pump-12", channels=("pressure", "temperature"))) == ["topic"]
    assert r.sinks_for(event("pump-12", channels=())) == ["topic"]


def test_with_match_all_a_sink_named_by_several_matching_rules_gets_the_event_once() -> None:
    routes = [{"severity": "critical", "sinks": ["a", "b"]}, {"sensor": "pump-*", "sinks": ["b", "hook", "a"]}]
    assert router(routes, "all").sinks_for(event()) == ["a", "b", "hook"]
    assert Router(parse_routes(routes, SINKS, BANDS), "all", ("log", "b")).sinks_for(event("fan-1", "warning")) == [
        "log", "b"]  # no rule matched: the configured default sinks, not the built-in topic


def test_a_sensor_s_tags_come_once_each_in_table_order() -> None:
    r = router([], tags={"pump-*": ["rotating", "site-b"], "*-3": ["site-b", "north"], "fan-*": ["air"]})
    assert r.sensor_tags("pump-3") == ("rotating", "site-b", "north")
    assert r.sensor_tags("Pump-3") == ("site-b", "north")


@pytest.mark.parametrize(("alerts", "message"), [
    ({"bands": {"warning": 1.0, "critical": float("inf")}},
     "config key alerts.bands.critical = inf is invalid: use a ratio of 0 or more"),
    ({"sinks": {"pager": {"type": "webhook", "url": "http://x", "timeout_s": 0}}},
     "config key alerts.sinks.pager.timeout_s = 0 is invalid: use a positive number of seconds, at most 86400 (a day)"),
    ({"sinks": {"pager": {"type": "webhook", "url": "http://x", "queue_size": 0}}},
     "config key alerts.sinks.pager.queue_size = 0 is invalid: use a whole number of 1 or more"),
    ({"sinks": {"pager": {"type": "webhook", "url": "http://x", "headers": {"X-Retries": 3}}}},
     'config key alerts.sinks.pager.headers is invalid: use a table of strings, e.g. { X-Token = "…" }'),
    ({"sinks": {"quiet": {"type": "log", "levl": "info"}}},
     "unknown config key alerts.sinks.quiet.levl: known keys: type, level"),
    ({"sinks": {"pager": {"type": "webhook", "url": "http://hooks.example.com:80a/x?token=s3cret"}}},
     "config key alerts.sinks.pager.url is invalid: its port is not a number from 0 to 65535"),
    ({"sinks": {"pager": {"type": "webhook", "url": "https:///x"}}},
     "config key alerts.sinks.pager.url is invalid: it names no host, e.g. https://hooks.example.com/path"),
    ({"topic": "readings"}, "config key alerts.topic = 'readings' is invalid: it is one of kafka.input_topics, so "
     "the worker would read its alerts back as readings (each a dead letter): name another topic"),
    ({"sinks": {"b": {"type": "topic", "topic": "readings"}}, "default_sinks": ["b"]},
     "config key alerts.sinks.b.topic = 'readings' is invalid: it is one of kafka.input_topics, so the worker would "
     "read its alerts back as readings (each a dead letter): name another topic"),
    ({"sinks": {"b": {"type": "topic", "topic": "ops/pager"}}, "default_sinks": ["b"]},
     "config key alerts.sinks.b.topic = 'ops/pager' is invalid: a Kafka topic's name uses letters, digits, '.', '_' "
     "and '-' only (at most 249): name another topic"),
    ({"bands": {"info": 0.5, "warning": 1.0}},
     "config key alerts.bands.info is invalid: info is the severity of every data-quality event, so a route on it "
     "could not tell the two apart; name the band otherwise, e.g. notice"),
    ({"sinks": {"quiet": {"type": "log", "level": "warn"}}},
     "config key alerts.sinks.quiet.level = 'warn' is invalid: use one of debug, info, warning, error, critical"),
])
def test_a_bad_band_or_sink_setting_is_refused_at_start_up_with_the_fix(alerts: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        build_alert_stage(parse_config({"alerts": alerts}))
    assert str(e.value) == message


def test_two_bands_with_the_same_floor_are_refused_naming_both() -> None:
    """The later name always won a tie: a route on the other (a pager on "critical") never matched."""
    with pytest.raises(ConfigError, match=r"alerts\.bands\.major = 2 is invalid: alerts\.bands\.critical has the same"):
        parse_bands({"warning": 1.0, "major": 2.0, "critical": 2.0})
