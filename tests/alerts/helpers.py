"""Synthetic scored windows for the alert unit tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from aestream.stream.messages import Outgoing, Partition
from aestream.stream.stages import Scored
from aestream.stream.windows import Window

CHANNELS = ("temperature", "pressure", "vibration", "current")
T0 = 1_767_225_600_000
SCHEMAS = Path(__file__).resolve().parents[2] / "aestream" / "schemas"


def scored(sensor: str, i: int, ratio: float, alarm: bool | None = None, replay: bool = False,
           threshold: float = 0.5, step_ms: int = 4000, partition: Partition | None = None) -> Scored:
    """Window ``i`` of ``sensor`` (ends every ``step_ms``), scored at ``ratio`` × threshold."""
    end = T0 + i * step_ms
    shares = np.array([0.1, 0.2, 0.6, 0.1])
    w = Window(sensor, end - 15_000, end, np.zeros((16, 4), dtype=np.float32))
    return Scored(w, ratio * threshold, threshold, ratio > 1.0 if alarm is None else alarm, shares, "v0001",
                  None, replay, partition)


class MemoryChangelog:
    """A compacted changelog kept in memory (the :class:`~aestream.kafka.protocols.Changelog` protocol): the
    newest value of each (input partition, key); a record counts as written as soon as it is made."""

    def __init__(self) -> None:
        self.log: dict[tuple[Partition, str], bytes] = {}

    def record(self, part: Partition, key: str, value: bytes) -> Outgoing:
        self.log[(part, key)] = value
        return Outgoing("alerts-changelog", value, key.encode(), [], part[1])

    def restore(self, parts: list[Partition]) -> dict[Partition, dict[str, bytes]]:
        out: dict[Partition, dict[str, bytes]] = {}
        for (part, key), value in self.log.items():
            if part in parts:
                out.setdefault(part, {})[key] = value
        return out


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def decode(messages: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(m.value) for m in messages]
