"""The count phase of a partition's sensors, carried as the metadata of its offset commit.

With a count stride (``stream.stride > 1``, no ``stride_ms``) a window closes every ``stride`` readings of a
sensor, counted from where the worker started. A worker that commits offset ``o`` of a partition also commits,
in the commit's metadata string, where each sensor of that partition stands in its stride after the record at
``o - 1`` (:meth:`aestream.stream.windows.Windower.phases`); the next owner replays the lookback up to ``o`` and then
restores those phases, so a batch emitted and not committed before a crash closes windows on the same readings
again — the same event ids. Like a stream processor's checkpoint, but in the offset commit itself.

Format (version 1): compact JSON ``{"v":1,"stride":S,"phases":[[sensors at phase 0],[at phase 1],...]}`` with
sorted sensor names, or ``z`` + base64 of its zlib deflate when that is shorter. The broker refuses metadata
over ``offset.metadata.max.bytes`` (4096 by default): :func:`encode_phases` then gives ``None`` and the commit
goes without phases. The next owner then closes each sensor's window at its first live reading and counts its
stride from there: the readings the last owner read after its last window are in that window (a stride is at most
``window_size``), so every reading is still in a reported window, under window ends (ids) of its own.
:class:`PhaseCheckpoint` is the worker's side of it: the metadata of a commit, the restore after a rebuild.

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
import logging
import re
import zlib
from collections.abc import Iterable, Mapping

from aestream.stream.messages import Partition
from aestream.stream.windows import Windower

__all__ = ["METADATA_MAX_BYTES", "PhaseCheckpoint", "decode_phases", "encode_phases", "warn_metadata_refused"]

log = logging.getLogger(__name__)

METADATA_MAX_BYTES = 4096  # the broker's offset.metadata.max.bytes default
VERSION = 1
_DEFLATED = "z"
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


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
    written by another tool, or damaged). What follows the phases is ignored: librdkafka keeps commit metadata
    as a C string, so what confluent-kafka committed reads back with a NUL, and what kafka-python committed may
    read back through confluent-kafka with bytes past its end.

    >>> decode_phases('{"v":1,"stride":2,"phases":[["a"],[]]}\\x00')
    (2, {'a': 0})
    >>> decode_phases('{"v":1,"stride":1,"phases":[]}\\x7f')
    (1, {})
    """
    if not text:
        return None
    try:
        if text[0] == _DEFLATED:
            b64 = _BASE64.match(text, 1)
            assert b64 is not None  # the pattern matches the empty string
            packed = b64.group()[: len(b64.group()) // 4 * 4]
            doc = json.loads(zlib.decompressobj().decompress(base64.b64decode(packed, validate=True)))
        else:
            doc = json.JSONDecoder().raw_decode(text)[0]
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


def warn_metadata_refused(metadata: Mapping[Partition, str]) -> None:
    """What both Kafka edges say when the broker refuses this commit metadata as too large (they then commit
    without it from then on)."""
    log.warning("the broker refuses offset commit metadata of %d characters (offset.metadata.max.bytes below "
                "4096?): committing without window phases from now on", max(map(len, metadata.values()), default=0))


class PhaseCheckpoint:
    """One worker's checkpoint of a count stride: the commit metadata of its partitions (:meth:`metadata`), and
    the metadata rebuilt partitions were committed with (:meth:`expect`), restored once their replay is over
    (:meth:`restore`)."""

    def __init__(self, windows: Windower, max_bytes: int = METADATA_MAX_BYTES) -> None:
        self.windows = windows
        self.max_bytes = max_bytes
        self.pending: dict[Partition, str] = {}  # to restore before the partition's first live record
        self._unsaved: dict[Partition, int] = {}  # partitions whose phases did not fit: their number of sensors

    def metadata(self, sensor_partition: Mapping[str, Partition], parts: Iterable[Partition]) -> dict[Partition, str]:
        """Per partition, its sensors' phases now (the commit's offset: everything before it is processed); none
        where they do not fit (a warning, once per partition) or where no sensor is held."""
        sensors: dict[Partition, list[str]] = {p: [] for p in parts}
        for s, p in sensor_partition.items():
            if p in sensors:
                sensors[p].append(s)
        out = {}
        for p, names in sensors.items():
            if not names or len(names) >= self._unsaved.get(p, len(names) + 1):
                continue  # as many sensors as when they did not fit: no need to encode them again to know
            text = encode_phases(self.windows.stride, self.windows.phases(names), self.max_bytes)
            if text is not None:
                out[p] = text
                continue
            warn = p not in self._unsaved
            self._unsaved[p] = len(names)
            if warn:
                log.warning("the window phase of the %d sensors of %s[%d] does not fit in an offset commit's "
                            "metadata: committed without it, so after a restart an uncommitted batch may come again "
                            "under other window ends (other ids); fewer sensors per partition (more partitions) or "
                            "stream.stride_ms avoid that", len(names), p[0], p[1])
        return out

    def expect(self, committed: Mapping[Partition, str]) -> None:
        """The metadata committed with the offsets these partitions' replays replay up to."""
        self.pending.update(committed)

    def forget(self, parts: Iterable[Partition]) -> None:
        """These partitions moved away: their pending metadata is no longer ours."""
        for p in parts:
            self.pending.pop(p, None)

    def restore(self, parts: set[Partition], sensor_partition: Mapping[str, Partition]) -> None:
        """Restore the pending phases of these partitions: their replay is over, their live records follow.
        Where none were committed, each of the partition's sensors (``sensor_partition``) closes a window at its
        first live reading: the readings its last owner read after its last window, which its replay alone would
        only put in replayed windows (never reported), are in that one."""
        for p in parts & self.pending.keys():
            text = self.pending.pop(p)
            found = decode_phases(text) if text else None
            if found is not None and found[0] == self.windows.stride:
                n = self.windows.restore_phases(found[1])
                log.info("restored the window phase of %d of %d sensors of %s[%d]", n, len(found[1]), p[0], p[1])
                continue
            if text:
                log.warning("the metadata committed on %s[%d] (%.40r) holds no window phases for stream.stride = %d: "
                            "its sensors close a window at their first live reading", p[0], p[1], text,
                            self.windows.stride)
            due = (self.windows.window_size - 1) % self.windows.stride  # the phase whose next reading closes one
            self.windows.restore_phases({s: due for s, q in sensor_partition.items() if q == p})
