"""The count phase of a partition's sensors, carried as the metadata of its offset commit.

With a count stride (``stream.stride > 1``, no ``stride_ms``) a window closes every ``stride`` readings of a
sensor, counted from where the worker started. A worker that commits offset ``o`` of a partition also commits,
in the commit's metadata string, where each sensor of that partition stands in its stride after the record at
``o - 1`` (:meth:`aestream.windows.Windower.phases`); the next owner replays the lookback up to ``o`` and then
restores those phases, so a batch emitted and not committed before a crash closes windows on the same readings
again — the same event ids. Like a stream processor's checkpoint, but in the offset commit itself.

Format (version 1): compact JSON ``{"v":1,"stride":S,"phases":[[sensors at phase 0],[at phase 1],...]}`` with
sorted sensor names, or ``z`` + base64 of its zlib deflate when that is shorter. The broker refuses metadata
over ``offset.metadata.max.bytes`` (4096 by default): :func:`encode_phases` then gives ``None`` and the commit
goes without phases (the next owner counts from its replay, as before this checkpoint existed).

>>> text = encode_phases(4, {"pump-1": 3, "pump-2": 0, "pump-3": 3})
>>> text
'{"v":1,"stride":4,"phases":[["pump-2"],[],[],["pump-1","pump-3"]]}'
>>> decode_phases(text) == (4, {"pump-2": 0, "pump-1": 3, "pump-3": 3})
True
>>> encode_phases(4, {f"sensor-{i}": i % 4 for i in range(1000)}).startswith("z")  # deflated: 2.6 kB
True
>>> encode_phases(4, {f"{i:x}": 0 for i in range(5000)}) is None  # does not fit: commit without phases
True
>>> decode_phases(""), decode_phases("written by another tool")
(None, None)
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Mapping

__all__ = ["METADATA_MAX_BYTES", "decode_phases", "encode_phases"]

METADATA_MAX_BYTES = 4096  # the broker's offset.metadata.max.bytes default
VERSION = 1
_DEFLATED = "z"


def encode_phases(stride: int, phases: Mapping[str, int], max_bytes: int = METADATA_MAX_BYTES) -> str | None:
    """The commit metadata holding these sensors' phases, or ``None`` when it would exceed ``max_bytes``."""
    if len(phases) > max_bytes:  # no sensor name deflates below a byte: skip the encoding cost
        return None
    groups: list[list[str]] = [[] for _ in range(stride)]
    for sensor in sorted(phases):
        groups[phases[sensor]].append(sensor)
    doc = json.dumps({"v": VERSION, "stride": stride, "phases": groups}, ensure_ascii=False, separators=(",", ":"))
    raw = doc.encode()
    text = doc
    if len(raw) > 256:  # short ones do not deflate to less
        deflated = _DEFLATED + base64.b64encode(zlib.compress(raw, 9)).decode("ascii")
        if len(deflated) < len(raw):
            text = deflated
    return text if len(text.encode()) <= max_bytes else None


def decode_phases(text: str) -> tuple[int, dict[str, int]] | None:
    """``(stride, {sensor: phase})`` from commit metadata, or ``None`` when it holds no phases of ours (empty,
    written by another tool, or damaged)."""
    if not text:
        return None
    try:
        raw = zlib.decompress(base64.b64decode(text[1:], validate=True)) if text[0] == _DEFLATED else text.encode()
        doc = json.loads(raw)
    except (binascii.Error, zlib.error, ValueError):
        return None
    if not _valid(doc):
        return None
    return doc["stride"], {s: p for p, sensors in enumerate(doc["phases"]) for s in sensors}


def _valid(doc: object) -> bool:
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        return False
    stride, groups = doc.get("stride"), doc.get("phases")
    return (type(stride) is int and stride >= 1 and isinstance(groups, list) and len(groups) <= stride
            and all(isinstance(g, list) and all(isinstance(s, str) for s in g) for g in groups))
