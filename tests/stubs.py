"""In-memory stand-ins the worker tests share (on the path by conftest): a model source of prepared bundles, a
changelog of one input partition and the sink that writes it, and a sensor's polls of readings."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from aestream.models.bundle import ModelBundle
from aestream.stream.messages import Outgoing, Record

START_MS = 1_767_225_600_000


class Switch:
    """A model source of prepared bundles; ``current`` is whichever was set last (``now``)."""

    def __init__(self, bundles: dict[str, ModelBundle], current: str) -> None:
        self.bundles, self.now = bundles, current

    def current(self) -> str:
        return self.now

    def load(self, version: str | None = None, device: str = "cpu") -> ModelBundle:
        return self.bundles[version or self.now]


class Changelog:
    """A compacted changelog of one input partition: the newest value of each key, written when the sink sends it."""

    topic = "baselines-changelog"

    def __init__(self) -> None:
        self.log: dict[str, bytes] = {}

    def record(self, part: Any, key: str, value: bytes) -> Outgoing:
        return Outgoing(self.topic, value, key.encode(), [], part[1])

    def restore(self, parts: Any) -> dict[Any, dict[str, bytes]]:
        return {parts[0]: dict(self.log)} if parts else {}


class ChangelogSink:
    """A sink that delivers the changelog's records at once and drops the rest."""

    def __init__(self, changelog: Changelog) -> None:
        self.changelog = changelog

    def send(self, msg: Outgoing) -> None:
        if msg.topic == self.changelog.topic:
            self.changelog.log[msg.key.decode()] = msg.value  # type: ignore[union-attr]

    def flush(self, timeout_s: float = 60.0) -> None: ...
    def close(self, timeout_s: float = 10.0) -> None: ...


def sensor_polls(first: int, n: int, rng: np.random.Generator, sensor: str = "s") -> list[Record]:
    """Records ``first`` … ``first + n - 1`` of one sensor at 1 Hz, four channels around their own levels."""
    level = np.array([20.0, 5.0, 1.0, 3.0])
    return [Record("in", 0, i, sensor.encode(), json.dumps({"sensor": sensor, "ts": START_MS + 1000 * i,
                                                            "values": (rng.normal(size=4) + level).tolist()}).encode(),
                   0) for i in range(first, first + n)]
