"""Routing: severity bands, sink specifications and the rules that send an alert event to sinks. Pure.

A rule (one ``[[alerts.routes]]`` table) matches an event when every condition it names holds:

* ``type``: the event type(s) (``opened``, ``updated``, ``resolved``, ``sensor_silent``, ``sensor_resumed``,
  ``sensor_late_readings``, ``calibration_started``, ``calibration_finished``);
* ``severity``: the severity name(s): the bands of ``[alerts.bands]`` (episodes), or ``info`` (data-quality events);
* ``sensor``: shell glob(s) on the sensor id; ``sensor_regex``: a regular expression (``re.fullmatch``);
* ``channel``: the name(s) of which at least one is among the event's top contributing channels;
* ``tags``: tags the sensor must all carry (sensor tags come from ``[alerts.tags]``: glob → list of tags).

With ``match = "first"`` the first matching rule's ``sinks`` are used, with ``"all"`` the union of every
matching rule's, in order. An event no rule matches goes to ``default_sinks``.

>>> bands = parse_bands({"warning": 1.0, "critical": 2.0})
>>> bands.severity(1.3), bands.severity(2.0), bands.severity(0.4)
('warning', 'critical', 'warning')
>>> routes = parse_routes(({"severity": "critical", "sensor": "pump-*", "sinks": ["a"]},), {"a"}, bands)
>>> r = Router(routes, "first", ("b",))
>>> r.sinks_for({"type": "opened", "severity": "critical", "sensor": "pump-7", "channels": []})
['a']
>>> r.sinks_for({"type": "opened", "severity": "warning", "sensor": "pump-7", "channels": []})
['b']
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aestream.config import TOPIC_FIX, is_topic_name
from aestream.errors import ConfigError

__all__ = [
    "EVENT_TYPES",
    "Bands",
    "LogSpec",
    "Route",
    "Router",
    "SinkSpec",
    "TopicSpec",
    "WebhookSpec",
    "check_alerts",
    "parse_bands",
    "parse_routes",
    "parse_sinks",
    "tags_for",
]

EVENT_TYPES = ("opened", "updated", "resolved", "sensor_silent", "sensor_resumed", "sensor_late_readings",
               "calibration_started", "calibration_finished")
_QUALITY_SEVERITY = "info"  # the severity of every data-quality event (aestream.alerts.documents)
_ROUTE_KEYS = ("type", "severity", "sensor", "sensor_regex", "channel", "tags", "sinks")
_LEVELS = ("debug", "info", "warning", "error", "critical")
MAX_WEBHOOK_S = 86_400  # a webhook's timeout_s, backoff_s and max_backoff_s: at most a day


@dataclass(frozen=True)
class Bands:
    """Severity names ordered by the lowest score/threshold ratio each covers (ascending)."""

    names: tuple[str, ...]
    floors: tuple[float, ...]

    def severity(self, ratio: float) -> str:
        """The highest band whose floor ``ratio`` reaches; an alarm below every floor gets the lowest band."""
        name = self.names[0]
        for n, floor in zip(self.names, self.floors):
            if ratio >= floor:
                name = n
        return name

    def rank(self, name: str) -> int:
        """0 for the lowest band; -1 for a name that is not a band."""
        return self.names.index(name) if name in self.names else -1


def parse_bands(table: Mapping[str, Any], where: str = "alerts.bands") -> Bands:
    if not table:
        raise ConfigError(f"config key {where} = {{}} is invalid: name at least one band, e.g. warning = 1.0")
    items = []
    for name, floor in table.items():
        if name == _QUALITY_SEVERITY:
            raise ConfigError(f"config key {where}.{name} is invalid: {_QUALITY_SEVERITY} is the severity of every "
                              "data-quality event, so a route on it could not tell the two apart; name the band "
                              "otherwise, e.g. notice")
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor < math.inf:
            raise ConfigError(f"config key {where}.{name} = {floor!r} is invalid: use a ratio of 0 or more")
        items.append((float(floor), name))
    items.sort()
    for (f1, n1), (f2, n2) in zip(items, items[1:]):
        if f1 == f2:  # the later name would always win: a route on the other one would never match
            raise ConfigError(f"config key {where}.{n2} = {f2:g} is invalid: {where}.{n1} has the same floor, so one "
                              "of the two could never be an event's severity: give each band its own floor")
    return Bands(tuple(n for _, n in items), tuple(f for f, _ in items))


@dataclass(frozen=True)
class TopicSpec:
    """Produce the event to a Kafka topic (through the worker, so it shares the step's commit)."""

    topic: str


@dataclass(frozen=True)
class WebhookSpec:
    """POST the event as JSON to ``url`` from a background thread. ``headers`` may hold secrets: not in repr."""

    url: str = field(repr=False)
    timeout_s: float = 2.0
    retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    queue_size: int = 1000
    headers: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class LogSpec:
    """Write the event to the log at ``level``."""

    level: str = "warning"


SinkSpec = TopicSpec | WebhookSpec | LogSpec


def parse_sinks(table: Mapping[str, Any], default_topic: str, where: str = "alerts.sinks") -> dict[str, SinkSpec]:
    """Named sinks: the built-ins ``topic`` (``alerts.topic``) and ``log``, plus the configured ones."""
    sinks: dict[str, SinkSpec] = {"topic": TopicSpec(default_topic), "log": LogSpec()}
    for name, spec in table.items():
        at = f"{where}.{name}"
        if not isinstance(spec, Mapping):
            raise ConfigError(f"config key {at} = {spec!r} is invalid: it must be a table [{at}]")
        kind = spec.get("type")
        rest = {k: v for k, v in spec.items() if k != "type"}
        if kind == "topic":
            _known(rest, ("topic",), at)
            if not isinstance(rest.get("topic"), str) or not rest["topic"]:
                raise ConfigError(f"config key {at}.topic = {rest.get('topic')!r} is invalid: name the topic")
            if not is_topic_name(rest["topic"]):
                raise ConfigError(f"config key {at}.topic = {rest['topic']!r} is invalid: {TOPIC_FIX}")
            sinks[name] = TopicSpec(rest["topic"])
        elif kind == "webhook":
            sinks[name] = _webhook(rest, at)
        elif kind == "log":
            _known(rest, ("level",), at)
            level = rest.get("level", "warning")
            if level not in _LEVELS:
                raise ConfigError(f"config key {at}.level = {level!r} is invalid: use one of {', '.join(_LEVELS)}")
            sinks[name] = LogSpec(level)
        else:
            raise ConfigError(f'config key {at}.type = {kind!r} is invalid: use "topic", "webhook" or "log"')
    return sinks


def _webhook(spec: dict[str, Any], at: str) -> WebhookSpec:
    _known(spec, ("url", "timeout_s", "retries", "backoff_s", "max_backoff_s", "queue_size", "headers"), at)
    url = spec.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"config key {at}.url is invalid: use an http:// or https:// URL")
    u = urlsplit(url)
    try:  # the URL is not quoted back: its path or query may hold the webhook's secret
        host, _ = u.hostname, u.port
    except ValueError:
        raise ConfigError(f"config key {at}.url is invalid: its port is not a number from 0 to 65535") from None
    if not host:
        raise ConfigError(f"config key {at}.url is invalid: it names no host, e.g. https://hooks.example.com/path")
    numbers: dict[str, Any] = {k: spec[k] for k in ("timeout_s", "backoff_s", "max_backoff_s") if k in spec}
    for k, v in numbers.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= MAX_WEBHOOK_S or (
                k == "timeout_s" and v == 0):  # beyond a day: a socket's and an Event's wait overflow near 9e9
            raise ConfigError(f"config key {at}.{k} = {v!r} is invalid: use a positive number of seconds, at most "
                              f"{MAX_WEBHOOK_S} (a day)")
    counts: dict[str, Any] = {k: spec[k] for k in ("retries", "queue_size") if k in spec}
    for n, c in counts.items():
        if isinstance(c, bool) or not isinstance(c, int) or c < (1 if n == "queue_size" else 0):
            raise ConfigError(f"config key {at}.{n} = {c!r} is invalid: use a whole number"
                              f"{' of 1 or more' if n == 'queue_size' else ' of 0 or more'}")
    headers = spec.get("headers", {})
    if not isinstance(headers, Mapping) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f"config key {at}.headers is invalid: use a table of strings, e.g. {{ X-Token = \"…\" }}")
    for name, v in headers.items():  # the value is not shown: it is often a secret
        if any(c in f"{name}{v}" for c in "\r\n\0"):
            raise ConfigError(f"config key {at}.headers.{name} is invalid: a header name or value holds a line break "
                              "or NUL (a multi-line TOML string?); write it on one line")
    floats: dict[str, Any] = {k: float(v) for k, v in numbers.items()}
    return WebhookSpec(url=url, headers=dict(headers), **floats, **counts)


def _known(spec: Mapping[str, Any], keys: tuple[str, ...], at: str) -> None:
    for k in spec:
        if k not in keys:
            raise ConfigError(f"unknown config key {at}.{k}: known keys: type, {', '.join(keys)}")


@dataclass(frozen=True)
class Route:
    """One routing rule; empty conditions match everything."""

    sinks: tuple[str, ...]
    types: frozenset[str] = frozenset()
    severities: frozenset[str] = frozenset()
    sensor_globs: tuple[str, ...] = ()
    sensor_regex: re.Pattern[str] | None = None
    channels: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()

    def matches(self, event: Mapping[str, Any], sensor_tags: Iterable[str] = ()) -> bool:
        sensor = str(event.get("sensor", ""))
        if self.types and event.get("type") not in self.types:
            return False
        if self.severities and event.get("severity") not in self.severities:
            return False
        if self.sensor_globs and not any(fnmatch.fnmatchcase(sensor, g) for g in self.sensor_globs):
            return False
        if self.sensor_regex is not None and not self.sensor_regex.fullmatch(sensor):
            return False
        if self.channels and not self.channels & {c["name"] for c in event.get("channels", ())}:
            return False
        return not self.tags or self.tags <= set(sensor_tags)


def parse_routes(tables: Iterable[Mapping[str, Any]], known_sinks: Iterable[str], bands: Bands,
                 where: str = "alerts.routes") -> tuple[Route, ...]:
    """The rules of ``tables``. A ``severity`` must name one of ``bands`` or ``info``: any other value (a typo)
    would never match, and its events would silently go elsewhere."""
    known = set(known_sinks)
    routes = []
    for i, t in enumerate(tables):
        at = f"{where}[{i}]"
        for k in t:
            if k not in _ROUTE_KEYS:
                raise ConfigError(f"unknown config key {at}.{k}: known keys: {', '.join(_ROUTE_KEYS)}")
        sinks = _strings(t.get("sinks"), f"{at}.sinks")
        if not sinks:
            raise ConfigError(f"config key {at}.sinks is missing: name the sinks this rule sends to, e.g. [\"topic\"]")
        for s in sinks:
            if s not in known:
                raise ConfigError(f"config key {at}.sinks names {s!r}, which is not a sink: define [alerts.sinks.{s}] "
                                  f"or use one of {', '.join(sorted(known))}")
        types = _strings(t.get("type"), f"{at}.type")
        bad = [x for x in types if x not in EVENT_TYPES]
        if bad:
            raise ConfigError(f"config key {at}.type = {bad[0]!r} is invalid: use one of {', '.join(EVENT_TYPES)}")
        regex = t.get("sensor_regex")
        try:
            pattern = re.compile(regex) if regex is not None else None
        except (re.error, TypeError) as e:
            raise ConfigError(f"config key {at}.sensor_regex = {regex!r} is invalid ({e}): fix the expression") \
                from None
        routes.append(Route(sinks, frozenset(types), frozenset(_severities(t.get("severity"), bands, at)),
                            _strings(t.get("sensor"), f"{at}.sensor"), pattern,
                            frozenset(_strings(t.get("channel"), f"{at}.channel")),
                            frozenset(_strings(t.get("tags"), f"{at}.tags"))))
    return tuple(routes)


def _severities(value: Any, bands: Bands, at: str) -> tuple[str, ...]:
    allowed = (*bands.names, _QUALITY_SEVERITY)
    names = _strings(value, f"{at}.severity")
    bad = [x for x in names if x not in allowed]
    if bad:
        raise ConfigError(f"config key {at}.severity = {bad[0]!r} is invalid: use one of {', '.join(allowed)} "
                          f"(the bands of [alerts.bands], and {_QUALITY_SEVERITY} for data-quality events)")
    return names


def _strings(value: Any, at: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"config key {at} = {value!r} is invalid: use a string or a list of strings")


class Router:
    """Which sinks an event goes to."""

    def __init__(self, routes: tuple[Route, ...], match: str = "first", default_sinks: tuple[str, ...] = ("topic",),
                 tags: Mapping[str, Any] | None = None) -> None:
        self.routes, self.match, self.default_sinks = routes, match, default_sinks
        self.tags = dict(tags or {})
        self._tag_cache: dict[str, tuple[str, ...]] = {}

    def sensor_tags(self, sensor: str) -> tuple[str, ...]:
        tags = self._tag_cache.get(sensor)
        if tags is None:
            tags = self._tag_cache[sensor] = tags_for(sensor, self.tags)
        return tags

    def forget(self, sensors: Iterable[str]) -> None:
        """Drop the cached tags of ``sensors`` (forgotten by the stage): the cache holds only sensors it keeps."""
        for s in sensors:
            self._tag_cache.pop(s, None)

    def sinks_for(self, event: Mapping[str, Any]) -> list[str]:
        tags = self.sensor_tags(str(event.get("sensor", "")))
        out: list[str] = []
        for r in self.routes:
            if r.matches(event, tags):
                out.extend(s for s in r.sinks if s not in out)
                if self.match == "first":
                    break
        return out or list(self.default_sinks)


def tags_for(sensor: str, table: Mapping[str, Any]) -> tuple[str, ...]:
    """The tags of every glob in ``table`` that ``sensor`` matches, in table order, without repeats.

    >>> tags_for("pump-3", {"pump-*": ["rotating"], "*-3": ["site-b"], "fan-*": ["air"]})
    ('rotating', 'site-b')
    """
    out: list[str] = []
    for glob, tags in table.items():
        if fnmatch.fnmatchcase(sensor, glob):
            out.extend(t for t in tags if t not in out)
    return tuple(out)


def check_alerts(a: Any, channels: Sequence[str] | None = None, input_topics: Sequence[str] = (),
                 taken: Mapping[str, str] | None = None) -> None:
    """Check an ``AlertsConfig``'s tables (bands, sinks, routes, tags; a route's ``channel`` names against
    ``channels``, ``stream.channels``, when given; a topic sink against ``input_topics``, ``kafka.input_topics``,
    and the other topics the worker writes, ``taken``: topic → what it is); raises :class:`ConfigError`."""
    bands = parse_bands(a.bands)
    sinks = parse_sinks(a.sinks, a.topic or "alerts")
    for name, spec in sinks.items():
        if not isinstance(spec, TopicSpec):
            continue
        key = "alerts.topic" if name == "topic" else f"alerts.sinks.{name}.topic"
        if spec.topic in input_topics:
            raise ConfigError(f"config key {key} = {spec.topic!r} is invalid: it is one of kafka.input_topics, so "
                              "the worker would read its alerts back as readings (each a dead letter): name another "
                              "topic")
        if taken and spec.topic in taken:
            raise ConfigError(f"config key {key} = {spec.topic!r} is invalid: it is also {taken[spec.topic]}, whose "
                              "readers would get alert events among its records: name another topic")
    for i, route in enumerate(parse_routes(a.routes, sinks, bands)):
        unknown = sorted(route.channels - set(channels or route.channels))
        if unknown:
            raise ConfigError(f"config key alerts.routes[{i}].channel names {unknown[0]!r}, which is not a channel: "
                              f"use some of stream.channels {list(channels or ())}")
    for s in a.default_sinks:
        if s not in sinks:
            raise ConfigError(f"config key alerts.default_sinks names {s!r}, which is not a sink: define "
                              f"[alerts.sinks.{s}] or use one of {', '.join(sorted(sinks))}")
    for glob, tags in a.tags.items():
        if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
            raise ConfigError(f"config key alerts.tags.{glob} = {tags!r} is invalid: use a list of strings, "
                              f'e.g. "{glob}" = ["rotating"]')
