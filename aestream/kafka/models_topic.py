"""Models served from Kafka: a compacted topic holds every bundle and the pointer to the current one.

The topic (``<group_id>-models``, one partition, ``cleanup.policy=compact``) holds three kinds of keys:

* ``bundle/v0007``: a packed, signed bundle (:func:`~aestream.models.bundle.pack_bundle`); a tombstone prunes it.
* ``claim/v0007``: ``{"by": "<publisher's nonce>", ...}``, a publisher's claim on the next version (``aestream
  trainer``, ``train``, ``retrain``). It reads the topic to its end, claims the number after every bundle and claim
  it read, and reads to the end again: the first claim of that number in the partition wins, and a publisher that
  lost to another one within the same moment claims the next number. So two publishers never write one
  version's bundle (compaction would keep only the last of the two, under a version a worker may have loaded from
  the first); pruning a version tombstones its claim too.
* ``current``: ``{"version": "v0007", ...}``, written by the publisher once its bundle is in the topic.
* ``hold``: ``{"version": "v0005", "active": true, ...}``, written by ``aestream models rollback``; while active it
  wins over ``current``, so a training that was already under way when the operator rolled back cannot put its
  candidate in service, whatever the order its messages reach the topic. ``aestream models resume`` lifts it.

Each reader keeps one consumer assigned to the topic's partition, reads to its end at start, and takes what is
new on each :meth:`KafkaModelStore.current` (a non-blocking poll): a worker follows a publish within its model
check interval, and a worker started later finds the current model in the topic. Bundles must carry a valid
HMAC-SHA256 made with the fleet's key (``AESTREAM_MODEL_KEY``): one whose content was changed is refused even
when its checksums were recomputed.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from aestream.config import KafkaConfig
from aestream.errors import BundleError
from aestream.kafka.kafka_python import client_options, ensure_topics
from aestream.models.bundle import ModelBundle, bundle_files, bundle_from_files, pack_bundle, unpack_bundle

__all__ = ["KafkaModelStore"]

log = logging.getLogger(__name__)

MAX_BUNDLE_BYTES = 16 * 1024 * 1024  # the topic's max.message.bytes and the producer's max_request_size
_VERSION = re.compile(r"^v(\d{4,})$")


class KafkaModelStore:
    """The model store in ``topic`` (the interface of :class:`~aestream.models.store.ModelStore`)."""

    def __init__(self, cfg: KafkaConfig, topic: str, key: bytes, keep: int = 10, timeout_s: float = 30.0) -> None:
        if not key:
            raise ValueError("a KafkaModelStore needs the fleet's signing key")
        self.cfg, self.topic, self.key, self.keep, self.timeout_s = cfg, topic, key, keep, timeout_s
        self._bundles: dict[str, bytes] = {}
        self._claims: dict[str, str] = {}  # version → the nonce of the first claim on it this reader read
        self._current: str | None = None
        self._hold: dict[str, Any] = {}
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None

    def __str__(self) -> str:
        return f"topic {self.topic}"

    # -- reading --------------------------------------------------------------------------------------------
    def versions(self) -> list[str]:
        """Versions in the topic, oldest first."""
        self._read()
        return sorted(self._bundles, key=lambda v: int(v[1:]))

    def current(self) -> str | None:
        """The serving version: the held one while a rollback holds, else the last published."""
        self._read()
        return self._held() or self._current

    def held(self) -> str | None:
        """The version a rollback holds current, or ``None``. Reads to the topic's end first: a trainer asks
        just before it publishes, and must see a hold the operator wrote a moment ago."""
        self._read(to_end=True)
        return self._held()

    def _held(self) -> str | None:
        return str(self._hold["version"]) if self._hold.get("active") else None

    def load(self, version: str | None = None, device: str = "cpu") -> ModelBundle:
        """Load and verify ``version`` (default: the current one)."""
        v = version or self.current()
        if v is None:
            raise BundleError(f"no model is published in the topic {self.topic}: run `aestream train` first")
        self._read()
        if v not in self._bundles:
            raise BundleError(f"model version {v} is not in the topic {self.topic}; known: "
                              f"{', '.join(self.versions()) or 'none'}")
        where = f"model bundle {v} of the topic {self.topic}"
        return bundle_from_files(unpack_bundle(self._bundles[v], where), where, device, self.key, v)

    def meta(self, version: str) -> dict[str, Any]:
        """``version``'s ``meta.json`` (unverified: for listing)."""
        self._read()
        where = f"model bundle {version} of the topic {self.topic}"
        try:
            doc: dict[str, Any] = json.loads(unpack_bundle(self._bundles[version], where)["meta.json"])
            return doc
        except (KeyError, ValueError) as e:
            raise BundleError(f"{where}: meta.json is unreadable ({e})") from None

    # -- writing (the publisher and the operator) -----------------------------------------------------------
    def publish(self, bundle: ModelBundle, make_current: bool = True) -> str:
        """Store ``bundle`` as the next version, signed, and by default point ``current`` at it. The version is
        claimed first (the module's docstring): another publisher's version (``aestream retrain`` beside the
        trainer, even within the same moment) is never taken again for another bundle."""
        nonce = uuid.uuid4().hex
        self._read(to_end=True)
        while True:
            taken = [int(v[1:]) for v in (*self._bundles, *self._claims)]
            version = f"v{max(taken, default=0) + 1:04d}"
            self._send(f"claim/{version}", _stamped({"by": nonce}))
            self._read(to_end=True)  # every claim up to ours, in the partition's order
            if self._claims.get(version) == nonce:
                break
            log.info("models topic %s: %s was claimed by another publisher first; claiming the next", self.topic,
                     version)
        bundle.version = version
        packed = pack_bundle(bundle_files(bundle, self.key))
        self._send(f"bundle/{version}", packed)
        self._bundles[version] = packed
        if make_current:
            self._pointer("current", {"version": version})
        self._prune(version)
        self._read()
        return version

    def rollback(self, version: str | None = None) -> str:
        """Hold ``version`` (default: the one before the current) current until :meth:`resume`."""
        versions, cur = self.versions(), self.current()
        if version is None:
            older = [v for v in versions if cur is None or int(v[1:]) < int(cur[1:])]
            if not older:
                raise BundleError(f"no version older than {cur} to roll back to in the topic {self.topic}")
            version = older[-1]
        self.load(version)  # refuse to hold a missing or refused bundle
        self._pointer("hold", {"version": version, "active": True})
        return version

    def resume(self) -> str | None:
        """Lift a rollback's hold: the held version serves until the next publish. Returns it (``None``: none)."""
        held = self.held()
        if held is not None:
            self._pointer("current", {"version": held})
            self._pointer("hold", {"active": False})
        return held

    def close(self) -> None:
        for client in (self._consumer, self._producer):
            if client is not None:
                client.close()
        self._consumer = self._producer = None

    # -- the topic ------------------------------------------------------------------------------------------
    def _read(self, to_end: bool = False) -> None:
        """Take what the topic has that this reader has not seen: all of it the first time, then what is new
        (``to_end``: all that is in the topic now, else what has been fetched)."""
        if self._consumer is None:
            self._ensure()
            consumer = KafkaConsumer(**client_options(self.cfg), group_id=None, enable_auto_commit=False,
                                     max_partition_fetch_bytes=MAX_BUNDLE_BYTES)
            consumer.assign([TopicPartition(self.topic, 0)])
            consumer.seek_to_beginning()
            try:
                self._catch_up(consumer)
            except TimeoutError:
                consumer.close()
                raise
            self._consumer = consumer
        elif to_end:
            self._catch_up(self._consumer)
        else:
            self._apply(self._consumer.poll(timeout_ms=0))

    def _catch_up(self, consumer: KafkaConsumer) -> None:
        tp = TopicPartition(self.topic, 0)
        end = consumer.end_offsets([tp])[tp]
        deadline = time.monotonic() + self.timeout_s
        while consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading the models topic {self.topic} took over {self.timeout_s:.0f} s")
            self._apply(consumer.poll(timeout_ms=500))

    def _apply(self, polled: dict[TopicPartition, list[Any]]) -> None:
        for msgs in polled.values():
            for m in msgs:
                key = (m.key or b"").decode(errors="replace")
                if key.startswith("bundle/") and _VERSION.match(key[7:]):
                    if m.value is None:
                        self._bundles.pop(key[7:], None)
                    else:
                        self._bundles[key[7:]] = m.value
                elif key.startswith("claim/") and _VERSION.match(key[6:]):
                    if m.value is None:
                        self._claims.pop(key[6:], None)
                    else:
                        self._claims.setdefault(key[6:], _claimant(m.value))
                elif key in ("current", "hold") and m.value is not None:
                    try:
                        doc = json.loads(m.value)
                    except ValueError:
                        log.error("models topic %s: the %s record at offset %d is not JSON; ignored", self.topic,
                                  key, m.offset)
                        continue
                    if key == "current":
                        self._current = doc.get("version")
                    else:
                        self._hold = doc

    def _pointer(self, key: str, doc: dict[str, Any]) -> None:
        self._send(key, _stamped(doc))
        if key == "current":
            self._current = doc["version"]
        else:
            self._hold = doc

    def _send(self, key: str, value: bytes | None) -> None:
        if self._producer is None:
            self._ensure()
            self._producer = KafkaProducer(**client_options(self.cfg), acks="all", max_request_size=MAX_BUNDLE_BYTES)
        self._producer.send(self.topic, key=key.encode(), value=value, partition=0).get(timeout=self.timeout_s)

    def _prune(self, newest: str) -> None:
        keep = {newest, self._current, self._held()}
        for v in self.versions()[: -self.keep]:
            if v not in keep:
                self._send(f"bundle/{v}", None)
                self._bundles.pop(v, None)
        # the claims of the versions gone, and of older ones never published (a publisher that died in between);
        # a claim under way is newer than every bundle
        oldest = min((int(v[1:]) for v in self._bundles), default=0)
        for v in [v for v in self._claims if v not in self._bundles and int(v[1:]) < oldest]:
            self._send(f"claim/{v}", None)
            self._claims.pop(v, None)

    def _ensure(self) -> None:
        """Create the topic (one partition, compacted, room for large bundles) when it is missing."""
        if ensure_topics(self.cfg, {self.topic: 1}, self.timeout_s,
                         {"cleanup.policy": "compact", "max.message.bytes": str(MAX_BUNDLE_BYTES)}):
            log.info("created the models topic %s (compacted)", self.topic)


def _stamped(doc: dict[str, Any]) -> bytes:
    """``doc`` as a pointer's or a claim's value: JSON, with the time it was written (``at_ms``)."""
    return json.dumps({**doc, "at_ms": int(time.time() * 1000)}).encode()


def _claimant(value: bytes) -> str:
    """The nonce of a ``claim/…`` record ("" when unreadable: a claim nobody publishing now holds)."""
    try:
        doc = json.loads(value)
    except ValueError:
        return ""
    return str(doc.get("by", "")) if isinstance(doc, dict) else ""
