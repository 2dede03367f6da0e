"""A partition's checkpoint carried as the metadata of its offset commit: its sensors' count phase, and the alarm
rule's state of those in or near an alarm.

With a count stride (``stream.stride > 1``, no ``stride_ms``) a window closes every ``stride`` readings of a
sensor, counted from where the worker started. A worker that commits offset ``o`` of a partition also commits,
in the commit's metadata string, where each sensor of that partition stands in its stride after the record at
``o - 1`` (:meth:`aestream.stream.windows.Windower.phases`); the next owner replays the lookback up to ``o`` and then
restores those phases, so a batch emitted and not committed before a crash closes windows on the same readings
again — the same event ids. Like a stream processor's checkpoint, but in the offset commit itself.

The alarm rule (``[threshold]`` ``k`` of the last ``n`` windows, ``smoothing``) remembers each sensor's last ``n``
threshold crossings, which a replay rebuilds only when it holds that many windows of the sensor: far more than
the window's worth a lookback shared by a partition's sensors may hold. So each commit also carries the rule's
state of the partition's sensors with a crossing among their last ``n`` (its bits, and with ``smoothing > 1`` its
last scores), and the next owner sets it, and clears the others', where the replay ends: an alarm held across a
restart holds on, and its episode neither resolves early nor opens twice.

Format (version 1): compact JSON ``{"v":1,"stride":S,"phases":[[sensors at phase 0],[at phase 1],...],
"alarms":{sensor: bits or [bits,[scores]]}}`` with sorted sensor names, or ``z`` + base64 of its zlib deflate when
that is shorter; ``phases`` only with a count stride, ``alarms`` only when the caller carries them (an absent key
is state not committed, an empty one none to restore). The broker refuses metadata over
``offset.metadata.max.bytes`` (4096 by default): :func:`encode_checkpoint` then gives ``None``, and the commit
goes with the phases alone, or the alarms alone, or without either. Without phases the next owner closes each
sensor's window at its first live reading and counts its stride from there: the readings the last owner read after
its last window are in that window (a stride is at most ``window_size``), so every reading is still in a reported
window, under window ends (ids) of its own. Without alarm states it keeps what its replay rebuilt.
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
from typing import NamedTuple

from aestream.stream.messages import Partition
from aestream.stream.windows import Windower

__all__ = ["METADATA_MAX_BYTES", "AlarmState", "Checkpoint", "PhaseCheckpoint", "decode_checkpoint", "decode_phases",
           "encode_checkpoint", "encode_phases", "warn_metadata_refused"]

log = logging.getLogger(__name__)

METADATA_MAX_BYTES = 4096  # the broker's offset.metadata.max.bytes default
VERSION = 1
_DEFLATED = "z"
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


AlarmState = tuple[int, tuple[float, ...]]  # a sensor's last n crossings as bits (the newest lowest), last scores


class Checkpoint(NamedTuple):
    """What a commit's metadata holds: ``phases`` and ``alarms`` are ``None`` where it carries none."""

    stride: int
    phases: dict[str, int] | None
    alarms: dict[str, AlarmState] | None


def encode_phases(stride: int, phases: Mapping[str, int], max_bytes: int = METADATA_MAX_BYTES) -> str | None:
    """The commit metadata holding these sensors' phases, or ``None`` when it would exceed ``max_bytes``."""
    return encode_checkpoint(stride, phases, None, max_bytes)


def encode_checkpoint(stride: int, phases: Mapping[str, int] | None, alarms: Mapping[str, AlarmState] | None,
                      max_bytes: int = METADATA_MAX_BYTES) -> str | None:
    """The commit metadata holding these sensors' phases and alarm states (either ``None``: not carried), or
    ``None`` when it would exceed ``max_bytes``.

    >>> encode_checkpoint(1, None, {"pump-2": (5, ()), "pump-1": (1, (0.5, 2.25))})
    '{"v":1,"stride":1,"alarms":{"pump-1":[1,[0.5,2.25]],"pump-2":5}}'
    >>> decode_checkpoint(_).alarms
    {'pump-1': (1, (0.5, 2.25)), 'pump-2': (5, ())}
    """
    if len(phases or ()) + len(alarms or ()) > max_bytes:  # no sensor name deflates below a byte: skip the cost
        return None
    fields: dict[str, object] = {"v": VERSION, "stride": stride}
    if phases is not None:
        groups: list[list[str]] = [[] for _ in range(stride)]
        for sensor in sorted(phases):
            groups[phases[sensor]].append(sensor)
        fields["phases"] = groups
    if alarms is not None:
        fields["alarms"] = {s: _alarm_json(*alarms[s]) for s in sorted(alarms)}
    doc = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
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
    found = decode_checkpoint(text)
    return None if found is None or found.phases is None else (found.stride, found.phases)


def decode_checkpoint(text: str) -> Checkpoint | None:
    """The phases and alarm states of commit metadata (:func:`decode_phases`), or ``None`` when it holds
    neither of ours."""
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
    groups, alarms = doc.get("phases"), doc.get("alarms")
    return Checkpoint(doc["stride"],
                      None if groups is None else {s: p for p, sensors in enumerate(groups) for s in sensors},
                      None if alarms is None else {s: (a, ()) if type(a) is int else (a[0], tuple(map(float, a[1])))
                                                   for s, a in alarms.items()})


def _valid(doc: object) -> bool:
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        return False
    stride, groups, alarms = doc.get("stride"), doc.get("phases"), doc.get("alarms")
    if type(stride) is not int or stride < 1 or (groups is None and alarms is None):
        return False
    if groups is not None and not (isinstance(groups, list) and len(groups) <= stride and all(
            isinstance(g, list) and all(isinstance(s, str) for s in g) for g in groups)):
        return False
    return alarms is None or (isinstance(alarms, dict) and all(_alarm(a) for a in alarms.values()))


def _alarm_json(bits: int, scores: tuple[float, ...]) -> object:
    return [bits, list(scores)] if scores else bits


def _alarm(a: object) -> bool:
    """``bits`` or ``[bits, [scores]]``, as :func:`encode_checkpoint` writes a sensor's alarm state."""
    if type(a) is int:
        return a >= 0
    return (isinstance(a, list) and len(a) == 2 and type(a[0]) is int and a[0] >= 0 and isinstance(a[1], list)
            and all(type(x) in (int, float) for x in a[1]))


def warn_metadata_refused(metadata: Mapping[Partition, str]) -> None:
    """What both Kafka edges say when the broker refuses this commit metadata as too large (they then commit
    without it from then on)."""
    log.warning("the broker refuses offset commit metadata of %d characters (offset.metadata.max.bytes below "
                "4096?): committing without window phases from now on", max(map(len, metadata.values()), default=0))


class PhaseCheckpoint:
    """One worker's checkpoint: the commit metadata of its partitions (:meth:`metadata`), and the metadata rebuilt
    partitions were committed with (:meth:`expect`), restored once their replay is over (:meth:`restore`). The
    window phases with a count stride (``count_stride``); the alarm states where the caller gives them."""

    def __init__(self, windows: Windower, max_bytes: int = METADATA_MAX_BYTES, count_stride: bool = True) -> None:
        self.windows = windows
        self.max_bytes = max_bytes
        self.count_stride = count_stride
        self.pending: dict[Partition, str] = {}  # to restore before the partition's first live record
        self._unsaved: dict[Partition, int] = {}  # partitions whose phases did not fit: their number of sensors
        self._alarms_unsaved: dict[Partition, int] = {}  # partitions whose alarm states did not fit: how many

    def metadata(self, sensor_partition: Mapping[str, Partition], parts: Iterable[Partition],
                 alarms: Mapping[str, AlarmState] | None = None) -> dict[Partition, str]:
        """Per partition, its sensors' phases now (the commit's offset: everything before it is processed), and
        with ``alarms`` (the rule's states of the sensors it carries, of every partition) those of its sensors;
        what does not fit is left out (a warning, once per partition)."""
        parts = list(parts)
        sensors: dict[Partition, list[str]] = {p: [] for p in parts}
        if self.count_stride:
            for s, p in sensor_partition.items():
                if p in sensors:
                    sensors[p].append(s)
        carried: dict[Partition, dict[str, AlarmState]] | None = None
        if alarms is not None:
            carried = {p: {} for p in parts}
            for s, state in alarms.items():
                q = sensor_partition.get(s)
                if q in carried:
                    carried[q][s] = state
        out = {}
        for p in parts:
            names = sensors[p]
            phases = None
            if names and len(names) < self._unsaved.get(p, len(names) + 1):  # known not to fit: not encoded again
                phases = self.windows.phases(names)
            held = None if carried is None else carried[p]
            if held and len(held) >= self._alarms_unsaved.get(p, len(held) + 1):  # as many as did not fit before
                held = None
            for ph, al in ((phases, held), (phases, None), (None, held)):  # both; the phases; the alarm states
                if (ph is not None or al is not None) and (text := encode_checkpoint(
                        self.windows.stride, ph, al, self.max_bytes)) is not None:
                    out[p] = text
                    break
            else:
                ph = al = None
            if phases is not None and ph is None:
                self._phases_unsaved(p, len(names))
            if held and al is None:
                self._alarms_unsaved_at(p, len(held))
        return out

    def _alarms_unsaved_at(self, p: Partition, n_sensors: int) -> None:
        warn = p not in self._alarms_unsaved
        self._alarms_unsaved[p] = n_sensors
        if warn:
            log.warning("the alarm state of the %d sensors of %s[%d] in or near an alarm does not fit in an offset "
                        "commit's metadata: committed without it, so after a restart their alarms (threshold.n) hold "
                        "only as far as the lookback replays them", n_sensors, p[0], p[1])

    def _phases_unsaved(self, p: Partition, n_sensors: int) -> None:
        warn = p not in self._unsaved
        self._unsaved[p] = n_sensors
        if warn:
            log.warning("the window phase of the %d sensors of %s[%d] does not fit in an offset commit's "
                        "metadata: committed without it, so after a restart an uncommitted batch may come again "
                        "under other window ends (other ids); fewer sensors per partition (more partitions) or "
                        "stream.stride_ms avoid that", n_sensors, p[0], p[1])

    def expect(self, committed: Mapping[Partition, str]) -> None:
        """The metadata committed with the offsets these partitions' replays replay up to."""
        self.pending.update(committed)

    def forget(self, parts: Iterable[Partition]) -> None:
        """These partitions moved away: their pending metadata is no longer ours."""
        for p in parts:
            self.pending.pop(p, None)

    def restore(self, parts: set[Partition],
                sensor_partition: Mapping[str, Partition]) -> dict[Partition, dict[str, AlarmState]]:
        """Restore the pending phases of these partitions: their replay is over, their live records follow.
        Where none were committed, each of the partition's sensors (``sensor_partition``) closes a window at its
        first live reading: the readings its last owner read after its last window, which its replay alone would
        only put in replayed windows (never reported), are in that one. Returns the alarm states committed, for
        the partitions whose metadata carried them (the caller sets them)."""
        alarms = {}
        for p in parts & self.pending.keys():
            text = self.pending.pop(p)
            found = decode_checkpoint(text) if text else None
            if found is not None and found.alarms is not None:
                alarms[p] = found.alarms
            if not self.count_stride:
                continue
            if found is not None and found.phases is not None and found.stride == self.windows.stride:
                n = self.windows.restore_phases(found.phases)
                log.info("restored the window phase of %d of %d sensors of %s[%d]", n, len(found.phases), p[0], p[1])
                continue
            if text:
                log.warning("the metadata committed on %s[%d] (%.40r) holds no window phases for stream.stride = %d: "
                            "its sensors close a window at their first live reading", p[0], p[1], text,
                            self.windows.stride)
            due = (self.windows.window_size - 1) % self.windows.stride  # the phase whose next reading closes one
            self.windows.restore_phases({s: due for s, q in sensor_partition.items() if q == p})
        return alarms
