"""Decoding reading messages: bytes in, :class:`Reading` tuples out, or :class:`InvalidReading` with the reason.

A message is one JSON reading, a JSON array of readings (the batched form), or one sensor's readings column-wise
(the columnar batch: a list of times and a list of rows, the fastest to decode)::

    {"sensor": "pump-7", "ts": 1767225600000, "values": {"temperature": 61.2, "pressure": 3.1}}
    {"sensor": "pump-7", "ts": "2026-01-01T00:00:00Z", "values": [61.2, 3.1]}
    {"sensor": "pump-7", "ts": [1767225600000, 1767225601000], "values": [[61.2, 3.1], [61.3, 3.1]]}

``ts`` is epoch milliseconds or an ISO-8601 string (UTC unless it carries an offset); ``values`` is an object
keyed by channel (every configured channel, no other) or a list in the configured channel order. A batched
message is accepted or refused as a whole, so a dead-lettered message can be replayed without duplicates.
A reading more than ``max_future_ms`` ahead of its record's timestamp or of this host's clock is refused too
(:meth:`ReadingDecoder.check_time`): accepted, it would become its sensor's newest reading, and every real reading
after it would be dropped as late.

>>> d = ReadingDecoder(("a", "b"))
>>> d.decode(b'{"sensor": "s1", "ts": 1767225600000, "values": [1, 2.5]}')
[Reading(sensor='s1', ts_ms=1767225600000, values=(1.0, 2.5))]
>>> d.decode(b'{"sensor": "s1", "ts": 1767225600000, "values": {"a": 1}}')
Traceback (most recent call last):
...
aestream.errors.InvalidReading: values lacks channel 'b'
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from datetime import datetime, timezone
from itertools import chain
from typing import Annotated, Any, NamedTuple

import msgspec
import numpy as np

from aestream.errors import InvalidReading

__all__ = ["Block", "Columns", "Reading", "ReadingDecoder", "encode_reading", "parse_ts_ms"]

DEFAULT_MAX_BYTES = 1_000_000
DEFAULT_MAX_READINGS = 10_000
DEFAULT_MAX_FUTURE_MS = 300_000
MAX_SENSOR_ID_CHARS = 256
# Epoch ms outside [2000-01-01, 2200-01-01) is refused: it is almost surely seconds, microseconds or garbage.
MIN_TS_MS = 946_684_800_000
MAX_TS_MS = 7_258_118_400_000
_FLOAT32_OVERFLOW = 2.0**128 - 2.0**103
"""The smallest magnitude that is infinite in a window's float32 (its largest finite value is 2**128 - 2**104, and
half a step above it rounds up): a value from it on is refused, as an infinity is."""


class Reading(NamedTuple):
    """One sensor's values at one event time."""

    sensor: str
    ts_ms: int
    values: tuple[float, ...]


class Block(NamedTuple):
    """Many readings of one sensor, in arrival order: ``ts_ms`` ``(k,)`` int64, ``values`` ``(k, C)`` float64."""

    sensor: str
    ts_ms: np.ndarray
    values: np.ndarray


class Columns(NamedTuple):
    """One reading per message of a poll, column-wise: ``sensors[i]``, ``ts_ms[i]`` and ``values[i]`` come from
    message ``i``."""

    sensors: list[str]
    ts_ms: np.ndarray
    values: np.ndarray


_SensorId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SENSOR_ID_CHARS)]
_Ms = Annotated[int, msgspec.Meta(ge=MIN_TS_MS, lt=MAX_TS_MS)]


class _Forms(NamedTuple):
    """The common form for ``n`` channels as msgspec types, checked in C as it decodes: the sensor id's length,
    integer ms in range, each row of a batch ``n`` numbers (a JSON number never decodes to a NaN or an infinity:
    out of a float's range it fails). A message that fails them takes the checking path, which finds its reason."""

    plain: Any  # a reading of an array batch: sensor, ts, values (a row)
    doc: Any  # a single reading (values: a list of numbers) or a columnar batch (ts: a list; values: rows)
    decode: Callable[[bytes], Any]


@functools.cache
def _forms(n: int) -> _Forms:
    row: Any = tuple[(float,) * n]  # type: ignore[misc]
    ms: Any = _Ms
    plain = msgspec.defstruct("_Plain", [("sensor", _SensorId), ("ts", ms), ("values", row)], gc=False)
    doc = msgspec.defstruct("_PlainDoc", [("sensor", _SensorId), ("ts", ms | list[ms]),
                                          ("values", list[float | row])], gc=False)
    return _Forms(plain, doc, msgspec.json.Decoder(doc | list[plain]).decode)  # type: ignore[operator, valid-type]


_decode_json = msgspec.json.Decoder().decode


class ReadingDecoder:
    """Turns message bytes into readings for a fixed channel list."""

    def __init__(
        self,
        channels: tuple[str, ...],
        max_message_bytes: int = DEFAULT_MAX_BYTES,
        max_readings_per_message: int = DEFAULT_MAX_READINGS,
        max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
    ) -> None:
        self.channels = tuple(channels)
        self._index = {c: i for i, c in enumerate(self.channels)}
        self.max_message_bytes = max_message_bytes
        self.max_readings_per_message = max_readings_per_message
        self.max_future_ms = max_future_ms
        self._forms = _forms(len(self.channels))

    def decode_blocks(self, data: bytes | None) -> list[Reading] | Block:
        """Like :meth:`decode`, but a batched message of one sensor comes back as one :class:`Block` of arrays
        (checked with numpy, no object per reading); anything else as :meth:`decode` returns it."""
        return self.from_doc(self._block_or_doc(self._parse(data)))

    def parse_many(self, messages: list[bytes | None]) -> list[Any]:
        """Each message's JSON document, or the :class:`InvalidReading` of one that is not JSON or too big. A batch
        of one sensor's readings in the common form comes back as its :class:`Block` at once: its lists of numbers
        are freed before the next message is parsed, so a poll's documents do not pile up for the garbage
        collector to walk over and over."""
        try:
            if max(map(len, messages)) <= self.max_message_bytes:  # type: ignore[arg-type]
                return [self._block_or_doc(self._typed(m)) for m in messages]  # type: ignore[arg-type]
        except (msgspec.DecodeError, ValueError, TypeError, RecursionError):  # one by one, each with its reason
            pass
        out: list[Any] = []
        for m in messages:
            try:
                out.append(self._block_or_doc(self._parse(m)))
            except InvalidReading as e:
                out.append(e)
        return out

    def _block_or_doc(self, doc: Any) -> Any:
        """A typed batch of one sensor as its :class:`Block`; any other document (or a batch with a fault, for
        the checking path) as it is."""
        if type(doc) is self._forms.doc:
            if type(doc.ts) is list:
                return self._plain_doc(doc) or doc
        elif type(doc) is list and len(doc) > 1 and type(doc[0]) is self._forms.plain:
            return self._typed_block(doc) or doc
        return doc

    def blocks(self, messages: list[bytes | None]) -> list[Block | None]:
        """Each message that is a batch of one sensor's readings in the common form (an array of readings, or
        the columnar form) as its :class:`Block`; ``None`` for any other (a single reading, or a batch with a
        fault: :meth:`from_doc` of its document gives it, or its reason). kafka-python's fetch process runs this
        beside the worker; :meth:`from_doc` of such a block is the block."""
        return [doc if type(doc) is Block else None for doc in self.parse_many(messages)]

    def from_doc(self, doc: Any) -> list[Reading] | Block:
        """:meth:`decode_blocks` of a document from :meth:`parse_many` (raises its :class:`InvalidReading`), or a
        block from :meth:`blocks`. A typed batch left as a document has a fault: the checking path finds it."""
        if type(doc) is Block:
            return doc  # type: ignore[no-any-return]
        if type(doc) is self._forms.doc and type(doc.ts) is int:  # a single reading in the common form
            fast = self._plain_doc(doc)
            if fast is not None:
                return fast
        elif isinstance(doc, InvalidReading):
            raise doc
        return self._checked(doc)  # the reason, or a form the typed decode refuses

    def columns(self, docs: list[Any]) -> Columns | None:
        """Documents from :meth:`parse_many` that are all single readings in the common form (list values,
        integer ms, plain numbers), checked at once; ``None`` when any is anything else: the caller then takes
        them one by one (:meth:`from_doc`), which finds each one's reason."""
        if set(map(type, docs)) != {self._forms.doc}:  # typed in C: only the shapes are left to check
            return None
        stamps = [d.ts for d in docs]
        if set(map(type, stamps)) != {int}:
            return None
        arrays = self._arrays(stamps, [d.values for d in docs], rows_typed=False)
        return None if arrays is None else Columns([d.sensor for d in docs], *arrays)

    def check_time(self, readings: list[Reading] | Block, record_ts_ms: int, now_ms: int) -> None:
        """Raise :class:`InvalidReading` (kind ``future``) when the newest of a message's readings is more than
        ``max_future_ms`` ahead of the record's timestamp (when it has one: 2000..2200) or of ``now_ms``, this
        host's clock; ``max_future_ms = 0`` checks nothing.

        >>> d = ReadingDecoder(("a",), max_future_ms=1000)
        >>> d.check_time([Reading("s", 1767225601000, (1.0,))], 1767225600000, 1767225600000)
        >>> try:
        ...     d.check_time([Reading("s", 1767225602000, (1.0,))], -1, 1767225600000)
        ... except InvalidReading as e:
        ...     print(e.kind, str(e)[:71])
        future ts 1767225602000 ms is 2 s ahead of this host's clock (1767225600000 ms
        """
        if not self.max_future_ms:
            return
        newest = int(readings.ts_ms.max()) if isinstance(readings, Block) else max(r.ts_ms for r in readings)
        if record_ts_ms >= MIN_TS_MS and record_ts_ms <= now_ms:
            ref, what = record_ts_ms, "its record's timestamp"
        else:
            ref, what = now_ms, "this host's clock"
        if newest - ref > self.max_future_ms:
            raise InvalidReading(f"ts {newest} ms is {_span(newest - ref)} ahead of {what} ({ref} ms; "
                                 f"stream.max_future_ms = {self.max_future_ms}): fix the clock of the source, or "
                                 "raise stream.max_future_ms", kind="future")

    def any_ahead(self, ts_ms: np.ndarray, record_ts_ms: np.ndarray, now_ms: int) -> bool:
        """Whether any ``ts_ms[i]`` fails :meth:`check_time` against its record's ``record_ts_ms[i]`` (the
        column-wise check: the caller then takes the messages one by one, which finds each one's reason)."""
        if not self.max_future_ms or not len(ts_ms):
            return False
        if int(ts_ms.max()) - min(now_ms, int(record_ts_ms.min())) <= self.max_future_ms:
            return False  # the common case: one comparison
        limit = np.where(record_ts_ms >= MIN_TS_MS, np.minimum(record_ts_ms, now_ms), now_ms) + self.max_future_ms
        return bool((ts_ms > limit).any())

    def decode(self, data: bytes | None) -> list[Reading]:
        """All readings of one message; raises :class:`InvalidReading` with the reason."""
        return self._checked(self._parse(data))

    def _checked(self, doc: Any) -> list[Reading]:
        """The checking path: each reading of ``doc``, or the reason it has none. The JSON decoder's depth limit
        falls with the stack it runs at, so what it let through can still meet Python's own limit here."""
        try:
            return self._readings(_untyped(doc))
        except RecursionError:
            raise InvalidReading("not a reading: a value nested deeper than the decoder allows") from None

    def _parse(self, data: bytes | None) -> Any:
        if data is None:
            raise InvalidReading("empty message (null value)")
        if len(data) > self.max_message_bytes:
            raise InvalidReading(f"message of {len(data)} bytes exceeds stream.max_message_bytes "
                                 f"({self.max_message_bytes})", kind="oversized")
        try:
            return self._typed(data)
        except msgspec.DecodeError as e:  # malformed, or a number out of a float's range
            raise InvalidReading(f"not JSON: {str(e)[:120]}") from None
        except RecursionError:
            raise InvalidReading("not JSON: nested deeper than the decoder allows") from None

    def _typed(self, data: bytes) -> Any:
        """The typed document of a message in the common form, else its plain JSON (dicts and lists)."""
        try:
            return self._forms.decode(data)
        except msgspec.ValidationError:
            return _decode_json(data)

    def _readings(self, doc: Any) -> list[Reading]:
        if isinstance(doc, dict) and isinstance(doc.get("ts"), list):
            doc = _rows_of(doc)
        if isinstance(doc, list):
            if not doc:
                raise InvalidReading("empty batch: a batched message must hold at least one reading")
            if len(doc) > self.max_readings_per_message:
                raise InvalidReading(f"batch of {len(doc)} readings exceeds stream.max_readings_per_message "
                                     f"({self.max_readings_per_message})")
            out = []
            for i, item in enumerate(doc):
                try:
                    out.append(self._reading(item))
                except InvalidReading as e:
                    raise InvalidReading(f"batch item {i}: {e}") from None
            return out
        return [self._reading(doc)]

    def _reading(self, doc: Any) -> Reading:
        fast = self._fast_reading(doc)
        if fast is not None:
            return fast
        if not isinstance(doc, dict):
            raise InvalidReading(f"a reading must be a JSON object, got {type(doc).__name__}")
        missing = [k for k in ("sensor", "ts", "values") if k not in doc]
        if missing:
            raise InvalidReading(f"missing field(s) {', '.join(missing)}")
        sensor = doc["sensor"]
        if not isinstance(sensor, str) or not sensor or len(sensor) > MAX_SENSOR_ID_CHARS:
            raise InvalidReading(f"sensor must be a non-empty string of at most {MAX_SENSOR_ID_CHARS} "
                                 f"characters, got {_short(sensor)}")
        return Reading(sensor, parse_ts_ms(doc["ts"]), self._values(doc["values"]))

    def _plain_doc(self, doc: Any) -> list[Reading] | Block | None:
        """A typed single reading or columnar batch (:class:`_Forms`), or ``None`` for the checking path."""
        sensor, ts, values = doc.sensor, doc.ts, doc.values
        if type(ts) is int:
            if len(values) != len(self.channels):
                return None
            try:  # a row in a single reading fails the sum
                sum(values)
            except TypeError:
                return None
            if not _in_float32(values):
                return None
            return [Reading(sensor, ts, tuple(values))]
        if not 0 < len(ts) == len(values) <= self.max_readings_per_message:  # type: ignore[arg-type]
            return None
        return self._plain_block(sensor, ts, values)  # type: ignore[arg-type]

    def _typed_block(self, doc: list[Any]) -> Block | None:
        """A typed batch of one sensor's readings as arrays, or ``None`` for the checking path."""
        if len(doc) > self.max_readings_per_message:
            return None
        sensors = {d.sensor for d in doc}
        if len(sensors) != 1:
            return None
        (sensor,) = sensors
        return self._plain_block(sensor, [d.ts for d in doc], [d.values for d in doc])

    def _plain_block(self, sensor: str, stamps: list[int], rows: list[Any]) -> Block | None:
        """One sensor's typed times and rows as a :class:`Block`, or ``None`` for the checking path."""
        arrays = self._arrays(stamps, rows)
        return None if arrays is None else Block(sensor, *arrays)

    def _arrays(self, stamps: list[int], rows: list[Any],
                rows_typed: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
        """Typed times and rows (:class:`_Forms`: in range and finite) as int64/float64 arrays, or ``None`` when a
        row is a number, or (not ``rows_typed``: a single reading's list of values) not of the channels' length."""
        n = len(self.channels)
        try:  # flattened in C: half the time of np.array on the nested lists
            if not rows_typed and set(map(len, rows)) != {n}:  # a number for a row raises TypeError
                return None
            values = np.fromiter(chain.from_iterable(rows), np.float64, len(rows) * n).reshape(len(rows), n)
        except (ValueError, TypeError):
            return None
        if values.size and not (-_FLOAT32_OVERFLOW < values.min() and values.max() < _FLOAT32_OVERFLOW):
            return None  # the checking path names the value
        return np.fromiter(stamps, np.int64, len(stamps)), values

    def _fast_reading(self, doc: Any) -> Reading | None:
        """The common case (list values, integer ms, plain numbers) in few C-level steps; ``None`` sends the
        message down the checking path, which finds the precise reason if there is one."""
        if type(doc) is not dict:
            return None
        sensor, ts, raw = doc.get("sensor"), doc.get("ts"), doc.get("values")
        if (type(sensor) is not str or not 0 < len(sensor) <= MAX_SENSOR_ID_CHARS or type(ts) is not int
                or not MIN_TS_MS <= ts < MAX_TS_MS or type(raw) is not list or len(raw) != len(self.channels)
                or not set(map(type, raw)) <= _PLAIN_NUMBERS):
            return None
        try:
            values = tuple(map(float, raw))
        except OverflowError:
            return None
        if not math.isfinite(sum(values)) or not _in_float32(values):
            return None
        return Reading(sensor, ts, values)

    def _values(self, raw: Any) -> tuple[float, ...]:
        n = len(self.channels)
        if isinstance(raw, list):
            if len(raw) != n:
                raise InvalidReading(f"values has {len(raw)} numbers, expected {n} (channels {list(self.channels)})")
            return tuple(_number(v, self.channels[i]) for i, v in enumerate(raw))
        if isinstance(raw, dict):
            unknown = [k for k in raw if k not in self._index]
            if unknown:
                raise InvalidReading(f"unknown channel {_short(unknown[0])}; configured: {list(self.channels)}")
            for c in self.channels:
                if c not in raw:
                    raise InvalidReading(f"values lacks channel {c!r}")
            return tuple(_number(raw[c], c) for c in self.channels)
        raise InvalidReading(f"values must be an object or a list, got {type(raw).__name__}")


def _untyped(doc: Any) -> Any:
    """A typed document as plain JSON values, for the checking path (its numbers as floats, as it reads them; its
    rows as lists)."""
    if isinstance(doc, msgspec.Struct) or (type(doc) is list and doc and isinstance(doc[0], msgspec.Struct)):
        return _decode_json(msgspec.json.encode(doc))
    return doc


def _rows_of(doc: dict[str, Any]) -> list[Any]:
    """A columnar batch as the equivalent list of readings (for the checking path and its reasons)."""
    stamps, rows = doc["ts"], doc.get("values")
    if not isinstance(rows, list) or len(rows) != len(stamps):
        got = f"{len(rows)} rows" if isinstance(rows, list) else _short(rows)
        raise InvalidReading(f"columnar batch: ts has {len(stamps)} times, so values must be a list of as many "
                             f"rows, got {got}")
    extra = {k: v for k, v in doc.items() if k not in ("ts", "values")}
    return [{**extra, "ts": t, "values": v} for t, v in zip(stamps, rows)]


def parse_ts_ms(ts: Any) -> int:
    """Epoch milliseconds from an integer/float of ms or an ISO-8601 string.

    >>> parse_ts_ms("2026-01-01T00:00:01Z")
    1767225601000
    >>> parse_ts_ms(1767225601000.0)
    1767225601000
    """
    if isinstance(ts, bool):
        raise InvalidReading(f"ts must be epoch milliseconds or ISO-8601, got {ts!r}")
    if isinstance(ts, (int, float)):
        if isinstance(ts, float) and not math.isfinite(ts):  # an int is finite however long (JSON has no bound)
            raise InvalidReading(f"ts is not finite: {ts!r}")
        value = int(ts)
    elif isinstance(ts, str):
        try:
            if not ts.isprintable():  # Python's parser stops at a NUL: "…Z\x00 junk" would pass
                raise ValueError
            dt = datetime.fromisoformat(ts.replace("Z", "+00:00") if ts.endswith("Z") else ts)
        except ValueError:
            raise InvalidReading(f"ts {_short(ts)} is not ISO-8601") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        value = int(round(dt.timestamp() * 1000))
    else:
        raise InvalidReading(f"ts must be epoch milliseconds or ISO-8601, got {type(ts).__name__}")
    if not MIN_TS_MS <= value < MAX_TS_MS:
        raise InvalidReading(f"ts {value} ms is outside 2000..2200: is it seconds or microseconds?")
    return value


def encode_reading(sensor: str, ts_ms: int, values: list[float] | tuple[float, ...]) -> bytes:
    """The canonical list-form JSON of one reading."""
    return json.dumps({"sensor": sensor, "ts": ts_ms, "values": list(values)}, separators=(",", ":")).encode()


def _number(v: Any, channel: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidReading(f"channel {channel!r} value {_short(v)} is not a number")
    try:
        f = float(v)
    except OverflowError:
        raise InvalidReading(f"channel {channel!r} value is too large for a float") from None
    if not math.isfinite(f):
        raise InvalidReading(f"channel {channel!r} value {v!r} is not finite")
    if abs(f) >= _FLOAT32_OVERFLOW:
        raise InvalidReading(f"channel {channel!r} value {f:g} is beyond float32's range (±3.4e38): windows hold "
                             "float32, where it would be infinite")
    return f


def _in_float32(values: Any) -> bool:
    """Whether every value of a row is finite in float32 (:data:`_FLOAT32_OVERFLOW`)."""
    return -_FLOAT32_OVERFLOW < min(values) and max(values) < _FLOAT32_OVERFLOW


_PLAIN_NUMBERS = frozenset((int, float))


def _span(ms: int) -> str:
    """A duration for a reason text.

    >>> _span(2_000), _span(5_400_000), _span(31_536_000_000)
    ('2 s', '1.5 h', '365 days')
    """
    if ms < 3_600_000:
        return f"{ms / 1000:.0f} s"
    if ms < 172_800_000:
        return f"{ms / 3_600_000:.1f} h"
    return f"{ms / 86_400_000:.0f} days"


def _short(v: object, limit: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."
