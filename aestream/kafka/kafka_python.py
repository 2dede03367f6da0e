"""The Kafka edge: the only module that imports kafka-python.

It turns consumer records into :class:`Record` and sends :class:`Outgoing` messages, so the rest of aestream
never sees a Kafka type. :class:`KafkaSource` is a consumer-group member that, when it is given a partition,
re-reads up to ``rebuild_lookback_messages`` before the committed offset so per-sensor windows can be rebuilt;
those records come back with ``replay=True`` and must not be emitted again. The metadata committed with that
offset (the window phases, :mod:`aestream.stream.phase`) is handed out by :meth:`KafkaSource.committed_metadata`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import (
    InvalidRecordError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OffsetMetadataTooLargeError,
    RecordListTooLargeError,
    RetriableError,
    TopicAlreadyExistsError,
    UnknownError,
)
from kafka.partitioner.default import DefaultPartitioner, murmur2
from kafka.structs import OffsetAndMetadata

from aestream.config import KafkaConfig
from aestream.errors import DeliveryError
from aestream.kafka.fetch_child import send_next_fetch, set_idle_sleep
from aestream.kafka.protocols import CommitDone
from aestream.kafka.refusals import MAX_STATE_BYTES, OnRefused, RefusingSink, commit_failed
from aestream.stream.codec import Block
from aestream.stream.messages import Outgoing, Partition, Record
from aestream.stream.phase import warn_metadata_refused

__all__ = ["KafkaSink", "KafkaSource", "client_options", "ensure_topics", "open_sink", "open_source",
           "tail_topic", "unreachable", "wait_for_broker"]

log = logging.getLogger(__name__)

METADATA_MAX_AGE_MS = 5_000
# leaving the group on close: bounded, so that a stop while the broker is away ends within a pod's grace period
CLOSE_TIMEOUT_MS = 5_000
# the lag query runs on the loop's thread: a broker gone away stalls the loop this long, not request_timeout_ms
LAG_TIMEOUT_MS = 2_000
RECONNECT_BACKOFF_MAX_MS = 1_000
# a commit that waits for the broker's answer (a stop's last one): kafka-python's own bound is request_timeout_ms
# (30 s), which with the consumer's close would outlast the grace deploy/ gives a stop during an outage
COMMIT_TIMEOUT_MS = 10_000
# between metadata requests that did not list a partition yet (the brokers learn a new one within moments)
METADATA_RETRY_S = 0.1
# errors of one message that no retry cures (its size, its contents): dead-lettered, not raised
_REFUSALS = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidRecordError)

def client_options(cfg: KafkaConfig) -> dict[str, Any]:
    """Connection and security settings shared by every client (SASL/SSL passed through when set)."""
    opts: dict[str, Any] = {
        "bootstrap_servers": list(cfg.bootstrap_servers),
        "client_id": cfg.client_id,
        "security_protocol": cfg.security_protocol,
        # a broker that restarts is tried again within a second (the Java client's default); kafka-python's own
        # default backs off up to 30 s between tries
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
    }
    optional = {
        "sasl_mechanism": cfg.sasl_mechanism,
        "sasl_plain_username": cfg.sasl_username,
        "sasl_plain_password": cfg.sasl_password,
        "ssl_cafile": cfg.ssl_cafile,
        "ssl_certfile": cfg.ssl_certfile,
        "ssl_keyfile": cfg.ssl_keyfile,
        "ssl_password": cfg.ssl_password,
    }
    opts.update({k: v for k, v in optional.items() if v})
    return opts


def open_source(
    cfg: KafkaConfig,
    on_revoke: Callable[[list[Partition]], None] | None = None,
    on_assign: Callable[[list[Partition]], None] | None = None,
    decode: tuple[tuple[str, ...], int, int] | None = None,
) -> KafkaSource:
    """The consumer of the configured client library (``kafka.client``). ``decode``: the stream's channels,
    ``max_message_bytes`` and ``max_readings_per_message``, for a fetch process to decode batched messages with
    (``Record.decoded``)."""
    if cfg.client == "confluent":
        from aestream.kafka.confluent import ConfluentSource

        return ConfluentSource(cfg, on_revoke, on_assign)  # type: ignore[return-value]
    return KafkaSource(cfg, on_revoke, on_assign, decode)


def open_sink(cfg: KafkaConfig, on_refused: OnRefused | None = None, topics: Iterable[str] = ()) -> KafkaSink:
    """The producer of the configured client library (``kafka.client``); ``on_refused`` counts refused messages.
    ``topics``: those it will send to, whose metadata kafka-python's producer fetches now (librdkafka queues a
    message for a topic it has no metadata for, and fetches it)."""
    if cfg.client == "confluent":
        from aestream.kafka.confluent import ConfluentSink

        return ConfluentSink(cfg, on_refused=on_refused)  # type: ignore[return-value]
    sink = KafkaSink(cfg, on_refused=on_refused)
    sink.learn(topics)
    return sink


def ensure_topics(cfg: KafkaConfig, topics: dict[str, int], timeout_s: float = 30.0,
                  configs: dict[str, str] | None = None) -> list[str]:
    """Create the topics that do not exist yet, with the given partition counts (replication 1 unless the
    broker default says otherwise) and topic ``configs``; returns the ones it created."""
    admin = KafkaAdminClient(**client_options(cfg), request_timeout_ms=int(timeout_s * 1000))
    try:
        existing = set(admin.list_topics())
        wanted = {t: {"num_partitions": n, **({"configs": configs} if configs else {})}
                  for t, n in topics.items() if t not in existing}
        if wanted:
            try:
                admin.create_topics(wanted, timeout_ms=int(timeout_s * 1000), wait_for_metadata=True)
            except TopicAlreadyExistsError:
                return []
        return list(wanted)
    finally:
        admin.close()


def _keep_rejoin_until_done(consumer: KafkaConsumer) -> None:
    """Make a rebalance that metadata started run to its end (KAFKA-9815 in the Java client).

    kafka-python 3.0.12 rejoins when the partitions of a subscribed topic change (a topic created just before the
    worker started, partitions added) without setting its ``rejoin_needed`` flag. Once the leader has computed the
    assignment, that reason is gone; if the poll's time runs out during the SyncGroup round trip, the next poll
    finds nothing to rejoin for and never applies the assignment it received: the member holds no partitions until
    the next rebalance (1 start in 15 on a 2-core machine). Setting the flag whenever a rejoin is needed keeps the
    join going until it completes.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    need_rejoin = getattr(coordinator, "need_rejoin", None)
    if coordinator is None or need_rejoin is None or not hasattr(coordinator, "request_rejoin"):
        return  # another kafka-python: nothing to mend

    def sticky_need_rejoin() -> bool:
        if need_rejoin():
            coordinator.request_rejoin()
            return True
        return False

    coordinator.need_rejoin = sticky_need_rejoin


class _Listener(ConsumerRebalanceListener):
    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.source._revoked([(tp.topic, tp.partition) for tp in revoked])

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        if self.source._fetch is not None:  # the fetch process reads them, from the offsets the source gives it
            self.source.consumer.pause(*assigned)
        self.source._pending.update((tp.topic, tp.partition) for tp in assigned)


class _FetchProcess:
    """The child process that fetches a :class:`KafkaSource`'s partitions (``kafka.fetch_process``,
    :mod:`aestream.kafka.fetch_child`). Each assignment it is given has a new epoch; records read under an older
    one (a partition since revoked, or read from before a seek) are dropped here."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.conn, child = Pipe(duplex=True)
        program = Path(__file__).with_name("fetch_child.py")
        self.proc = subprocess.Popen([sys.executable, str(program), str(child.fileno())], pass_fds=[child.fileno()])
        child.close()
        self.conn.send(options)
        self.epoch = 0
        self.assigned = False

    def assign(self, positions: dict[Partition, int | None]) -> None:
        """Read these partitions from these offsets (``None``: ``auto_offset_reset``), and nothing else."""
        self.epoch += 1
        self.assigned = bool(positions)
        self._send(("assign", self.epoch, positions))

    def take(self, timeout_s: float, max_rows: int) -> tuple[list[tuple[str, int, int, bytes | None, bytes | None,
                                                                    int]], list[Block | None] | None]:
        """The batches read under the current assignment, waiting up to ``timeout_s`` for the first, then all
        that are already there until ``max_rows`` (as a consumer's poll returns all it has fetched), and their
        records' blocks (``None``: not decoded). One batch a step would let a backlog queue in the socket."""
        conn: Connection = self.conn
        rows: list[tuple[str, int, int, bytes | None, bytes | None, int]] = []
        blocks: list[Block | None] | None = None
        wait = timeout_s
        while len(rows) < max_rows and conn.poll(wait):
            wait = 0
            try:
                kind, *rest = conn.recv()
            except EOFError:
                raise KafkaError(f"the fetch process exited (status {self.proc.wait()})") from None
            if kind == "error":
                raise KafkaError(f"the fetch process failed: {rest[0]}")
            if rest[0] != self.epoch:
                continue  # a stale batch
            rows += rest[1]
            if rest[2] is not None:  # a child with a decoder sends every batch's blocks, one without never does
                blocks = blocks or []
                blocks += rest[2]
        return rows, blocks

    def _send(self, command: tuple[Any, ...]) -> None:
        try:
            self.conn.send(command)
        except OSError:
            pass  # it died: the next take() says so (a revocation while the source closes must not fail)

    def close(self) -> None:
        self._send(("stop",))
        try:
            self.proc.wait(CLOSE_TIMEOUT_MS / 1000)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.conn.close()


class KafkaSource:
    """A consumer-group member reading ``cfg.input_topics``; commits only what it is told to."""

    def __init__(
        self,
        cfg: KafkaConfig,
        on_revoke: Callable[[list[Partition]], None] | None = None,
        on_assign: Callable[[list[Partition]], None] | None = None,
        decode: tuple[tuple[str, ...], int, int] | None = None,
    ) -> None:
        self.cfg = cfg
        self.on_revoke = on_revoke
        self.on_assign = on_assign
        self._pending: set[Partition] = set()
        self._replay_until: dict[Partition, int] = {}
        self._metadata: dict[Partition, str] = {}
        self._send_metadata = True  # until the broker refuses it as too large
        self._next: dict[Partition, int] = {}  # with a fetch process: the next offset each partition hands out
        self._unreachable = False  # the last poll failed on a retriable error (the broker is down)
        self._fetch = _FetchProcess({**client_options(cfg), "auto_offset_reset": cfg.auto_offset_reset,
                                     "max_poll_records": cfg.max_poll_records, "isolation_level": cfg.isolation_level,
                                     "metadata_max_age_ms": METADATA_MAX_AGE_MS, "decode": decode}) \
            if cfg.fetch_process else None
        self.consumer = KafkaConsumer(
            **client_options(cfg),
            group_id=cfg.group_id,
            enable_auto_commit=False,
            auto_offset_reset=cfg.auto_offset_reset,
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
            max_poll_interval_ms=cfg.max_poll_interval_ms,
            max_poll_records=cfg.max_poll_records,
            isolation_level=cfg.isolation_level,
            # kafka-python's default (5 min) leaves a worker started just after its topic was created without
            # partitions for minutes; new topics and partitions are also picked up sooner
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
        )
        _keep_rejoin_until_done(self.consumer)
        self.consumer.subscribe(list(cfg.input_topics), listener=_Listener(self))

    def assignment(self) -> set[Partition]:
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def _revoked(self, parts: list[Partition]) -> None:
        for p in parts:
            self._replay_until.pop(p, None)
            self._metadata.pop(p, None)
            self._pending.discard(p)
            self._next.pop(p, None)
        if self._fetch is not None and parts:  # what it read of them is dropped; the new owner reads it again
            self._fetch.assign({p: self._next.get(p) for p in self.assignment() - set(parts)})
        if self.on_revoke and parts:
            self.on_revoke(parts)

    def poll(self, timeout_ms: int | None = None, max_records: int | None = None) -> list[Record]:
        """The next records, oldest first per partition; replayed ones are flagged."""
        timeout = self.cfg.poll_timeout_ms if timeout_ms is None else timeout_ms
        if self._fetch is not None:
            return self._poll_fetched(timeout)
        batch = self._member_poll(timeout, max_records or self.cfg.max_poll_records)
        fresh = self._start_rebuilds() if self._pending else set()
        out: list[Record] = []
        for tp, msgs in batch.items():
            part = (tp.topic, tp.partition)
            if part in fresh:
                continue  # fetched from the committed offset, before our seek: they come again after the lookback
            until = self._replay_until.get(part)
            for m in msgs:
                replay = until is not None and m.offset < until
                out.append(Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp, replay))
            if until is not None and msgs and msgs[-1].offset + 1 >= until:
                del self._replay_until[part]
        return out

    def _poll_fetched(self, timeout_ms: int) -> list[Record]:
        """:meth:`poll` with a fetch process: the group member's own poll (its partitions paused) keeps the
        membership and runs the rebalances; the records come from the fetch process."""
        assert self._fetch is not None
        self._member_poll(0 if self._fetch.assigned else timeout_ms)  # returns nothing: all paused
        if self._pending:
            self._start_rebuilds()
        rows, blocks = self._fetch.take(timeout_ms / 1000 if self._fetch.assigned else 0, self.cfg.max_poll_records)
        out: list[Record] = []
        for i, (topic, partition, offset, key, value, timestamp) in enumerate(rows):
            part = (topic, partition)
            until = self._replay_until.get(part)
            out.append(Record(topic, partition, offset, key, value, timestamp, until is not None and offset < until,
                              blocks[i] if blocks else None))
            if until is not None and offset + 1 >= until:
                del self._replay_until[part]
            self._next[part] = offset + 1
        return out

    def _member_poll(self, timeout_ms: int, max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        """The group member's poll. A retriable error (kafka-python 3 raises the broker's refused connection from
        its coordinator lookup) is waited out: no records this time, and the next poll tries again."""
        set_idle_sleep(self.consumer, assigned=bool(self.consumer.assignment()))
        try:
            batch: dict[TopicPartition, list[Any]] = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except RetriableError as e:
            if not self._unreachable:
                log.warning("polling failed (%s: %s); polling on until the broker answers", type(e).__name__, e)
            self._unreachable = True
            time.sleep(max(timeout_ms, 100) / 1000)  # not a busy loop while it is down
            return {}
        if self._unreachable:
            log.info("polling works again")
            self._unreachable = False
        if batch and max_records is not None:
            send_next_fetch(self.consumer, batch, max_records)
        return batch

    def _start_rebuilds(self) -> set[Partition]:
        """Seek newly assigned partitions back by the lookback so their sensors' windows refill. With a fetch
        process, tell it where each of its partitions starts."""
        parts, self._pending = sorted(self._pending), set()
        if self.on_assign:
            self.on_assign(parts)
        lookback = self.cfg.rebuild_lookback_messages
        if lookback <= 0 and self._fetch is None:
            return set()
        tps = [TopicPartition(t, p) for t, p in parts]
        begin = self.consumer.beginning_offsets(tps)
        seeked: set[Partition] = set()
        for tp in tps:
            found = self.consumer.committed(tp, metadata=True)
            if found is not None:
                self._next[(tp.topic, tp.partition)] = max(found.offset, begin[tp])
            if lookback <= 0 or found is None or found.offset <= begin[tp]:
                continue
            committed, part = found.offset, (tp.topic, tp.partition)
            start = max(begin[tp], committed - lookback)
            self._next[part] = start
            self.consumer.seek(tp, start)
            self._replay_until[part] = committed
            self._metadata[part] = found.metadata or ""  # "": committed without window phases
            seeked.add(part)
            log.info("rebuilding %s[%d]: replaying offsets %d..%d", tp.topic, tp.partition, start, committed - 1)
        if self._fetch is not None:
            self._fetch.assign({(tp.topic, tp.partition): self._next.get((tp.topic, tp.partition))
                                for tp in self.consumer.assignment()})
        return seeked

    def committed_metadata(self) -> dict[Partition, str]:
        """The metadata committed with the offsets that partitions now replaying replay up to (each handed out
        once, before their first live record is polled)."""
        out, self._metadata = self._metadata, {}
        return out

    def commit(self, offsets: dict[Partition, int], metadata: dict[Partition, str] | None = None) -> bool:
        """Commit the next offsets to read, each with its partition's ``metadata`` if given; ``False`` when the
        group moved on (the records will be redone). If the broker refuses the metadata as too large, this
        commit and later ones go without it."""
        if not offsets:
            return True
        todo, meta = self._to_commit(offsets, metadata)
        try:
            try:
                self.consumer.commit(todo, timeout_ms=COMMIT_TIMEOUT_MS)
            except OffsetMetadataTooLargeError:
                self._send_metadata = False
                warn_metadata_refused(meta)
                self.consumer.commit({tp: OffsetAndMetadata(om.offset, "", -1) for tp, om in todo.items()},
                                     timeout_ms=COMMIT_TIMEOUT_MS)
            return True
        except KafkaError as e:  # CommitFailedError after a rebalance, or no coordinator (the broker is down)
            commit_failed(e)
            return False

    def commit_async(self, offsets: dict[Partition, int], metadata: dict[Partition, str] | None,
                     done: CommitDone) -> None:
        """Send a commit of ``offsets`` (as :meth:`commit`) and return at once; ``done(offsets, ok)`` is called on
        this thread by a later :meth:`poll` or commit, once the broker answered (kafka-python's I/O thread sends
        it meanwhile). ``ok`` is ``False`` when they were not committed: the group moved on, the broker is away,
        or it refused the metadata as too large (later commits then go without it)."""
        todo, meta = self._to_commit(offsets, metadata)
        if not todo:
            done(offsets, True)  # none is ours any more: nothing to commit, nothing to retry
            return

        def answered(_: object, result: object) -> None:
            if not isinstance(result, Exception):
                done(offsets, True)
                return
            refused = isinstance(result, OffsetMetadataTooLargeError) and self._send_metadata
            if refused:
                self._send_metadata = False
            commit_failed(result, refused, meta)
            done(offsets, False)

        try:
            self.consumer.commit_async(todo, callback=answered)
        except KafkaError as e:
            answered(None, e)

    def _to_commit(self, offsets: dict[Partition, int], metadata: dict[Partition, str] | None
                   ) -> tuple[dict[TopicPartition, OffsetAndMetadata], dict[Partition, str]]:
        """The offsets of partitions still ours, with their metadata unless the broker refused it before; and
        that metadata."""
        owned = self.assignment()
        meta = (metadata if self._send_metadata else None) or {}
        return {TopicPartition(t, p): OffsetAndMetadata(o, meta.get((t, p), ""), -1)
                for (t, p), o in offsets.items() if (t, p) in owned}, meta

    def lag(self) -> dict[Partition, int]:
        """Messages left to read per assigned partition."""
        tps = list(self.consumer.assignment())
        if not tps:
            return {}
        # The high watermark each fetch response carried (as confluent's cached watermarks): no request. The broker
        # answers a connection's requests in order, so a ListOffsets request waits behind the fetch it holds for
        # fetch_max_wait_ms when no records come: 200–400 ms on the worker's thread every lag interval (dev broker).
        # The fetch process's member fetches nothing, and a partition not fetched yet has no watermark: those ask.
        ends = {} if self._fetch is not None else {tp: self.consumer.highwater(tp) for tp in tps}
        unknown = [tp for tp in tps if ends.get(tp) is None]
        if unknown:
            ends.update(self.consumer.end_offsets(unknown, timeout_ms=LAG_TIMEOUT_MS))
        # with a fetch process the paused member's positions stay where they started: count from what was handed out
        return {(tp.topic, tp.partition): max(ends[tp] - self._position(tp), 0) for tp in tps}

    def _position(self, tp: TopicPartition) -> int:
        at = self._next.get((tp.topic, tp.partition)) if self._fetch is not None else None
        return self.consumer.position(tp) if at is None else at

    def close(self) -> None:
        try:
            self.consumer.close(autocommit=False, timeout_ms=CLOSE_TIMEOUT_MS)  # its revocation still tells the child
        finally:
            if self._fetch is not None:
                self._fetch.close()


FORCED_CLOSE_S = 5.0
"""How long a producer closed by force may take to fail its batches and stop its sender thread."""

SINK_BATCH_BYTES = 512 * 1024
"""The producer's batch size. With one request in flight, a burst of events (a step where many windows emit) fills
kafka-python's default 16 KiB batches while the first is out; from then on every ``send`` finds two batches queued
and wakes the sender thread, which takes the GIL from the worker: ~50 µs a send on the worker's thread, against
~25 µs with batches this large, where a burst goes in one batch (bursts of 300 events of 700 bytes, dev broker)."""


KEY_HASHES = 1 << 18
"""How many keys' hashes :class:`KeyHashPartitioner` keeps before it starts again (a worker's keys are its sensors)."""


class KeyHashPartitioner(DefaultPartitioner):
    """kafka-python's default partitioning, the Java client's (murmur2 of the key), with each key's hash kept.

    kafka-python computes murmur2 in pure Python at every send: 3–4 µs for a sensor id, on the worker's thread. Events
    are keyed by sensor, so the same few keys come back; their partitions stay those of every other producer."""

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}

    def partition(self, topic: str, key: Any, serialized_key: bytes | None, value: Any, serialized_value: Any,
                  cluster: Any) -> int:
        parts = cluster.partitions_for_topic(topic)
        if serialized_key is None or not parts:  # no key: a random partition; no metadata: kafka-python's error
            return int(super().partition(topic, key, serialized_key, value, serialized_value, cluster))
        h = self._hashes.get(serialized_key)
        if h is None:
            if len(self._hashes) >= KEY_HASHES:
                self._hashes.clear()
            h = self._hashes[serialized_key] = murmur2(serialized_key) & 0x7FFFFFFF
        return sorted(parts)[h % len(parts)]


class KafkaSink(RefusingSink):
    """A producer (acks=all, one request in flight, so a retry keeps the order) for events and dead letters.

    A message that the producer or the broker refuses for itself (too large, invalid) is dead-lettered, never
    raised (:class:`~aestream.kafka.refusals.RefusingSink`); ``on_refused`` hears of each. kafka-python's idempotent
    producer (its default since 3.0) is off: in 3.0.12 one refused message leaves it in a fatal state, in which it
    fails every later message with the same error.
    """

    def __init__(self, cfg: KafkaConfig, linger_ms: int = 5, on_refused: OnRefused | None = None) -> None:
        self.producer = KafkaProducer(**client_options(cfg), linger_ms=linger_ms, acks="all",
                                      max_request_size=MAX_STATE_BYTES,
                                      enable_idempotence=False, max_in_flight_requests_per_connection=1,
                                      batch_size=SINK_BATCH_BYTES, partitioner=KeyHashPartitioner())
        self.dead_letter_topic, self.dead_letter_max_bytes = cfg.dead_letter_topic, cfg.dead_letter_max_bytes
        self.on_refused = on_refused
        self._failed: list[tuple[Outgoing, BaseException]] = []  # found done and failed, taken by _take_refused
        # the messages sent and not yet seen done, oldest first, with their futures (an errback on each future cost
        # ~10 µs a send on the worker's thread: a closure, and a lock taken)
        self._futures: deque[tuple[Outgoing, Any]] = deque()

    def learn(self, topics: Iterable[str]) -> None:
        """Fetch the metadata of ``topics`` now, while the broker answers: kafka-python's producer blocks a send to
        a topic it has none for (up to its ``max_block_ms``), and once it has some it keeps it. A send to one of
        them during an outage is then queued, and delivered when the broker is back. Blocks while the broker does
        not answer, or does not know a topic and creates none (``auto.create.topics.enable``)."""
        for topic in topics:
            try:
                self.producer.partitions_for(topic)
            except KafkaTimeoutError as e:
                raise DeliveryError(f"no metadata for topic {topic!r}: {e} (the broker was unreachable, or the topic "
                                    "does not exist and the broker creates none: create it)") from e

    def _produce(self, msg: Outgoing) -> str | None:
        try:
            fut = self._send(msg)
        except _REFUSALS as e:  # above max_request_size: refused before it is sent
            return f"{type(e).__name__}: {e}"
        except KafkaTimeoutError as e:  # no metadata for a topic not sent to yet, or a full buffer: the broker away
            raise DeliveryError(f"producing to {msg.topic} failed: {e} (the broker was unreachable for the "
                                "producer's max_block_ms); the records since the last commit are read again") from e
        self._futures.append((msg, fut))
        self._sent += 1
        return None

    def _send(self, msg: Outgoing) -> Any:
        try:
            return self.producer.send(msg.topic, value=msg.value, key=msg.key, headers=msg.headers or None,
                                      partition=msg.partition)
        except ValueError:  # "Unrecognized partition": one added since the producer's metadata (a grown changelog)
            if msg.partition is None:
                raise
        self._await_partition(msg.topic, msg.partition)
        return self.producer.send(msg.topic, value=msg.value, key=msg.key, headers=msg.headers or None,
                                  partition=msg.partition)

    def _await_partition(self, topic: str, partition: int) -> None:
        """Refresh the producer's metadata until it lists ``partition`` of ``topic`` (kafka-python has no public
        call for it: its own refresh comes every ``metadata_max_age_ms``, 5 minutes by default)."""
        md = self.producer._metadata
        deadline = time.monotonic() + self.producer.config["max_block_ms"] / 1000
        while partition not in (md.partitions_for_topic(topic) or ()):
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeliveryError(f"producing to {topic} failed: the producer's metadata does not list its "
                                    f"partition {partition}; the records since the last commit are read again")
            answered = threading.Event()
            md.request_update().add_both(lambda event, _: event.set(), answered)
            self.producer._sender.wakeup()
            answered.wait(min(left, 1.0))
            if partition not in (md.partitions_for_topic(topic) or ()):
                time.sleep(min(METADATA_RETRY_S, max(deadline - time.monotonic(), 0.0)))

    def _settled(self, mark: int, timeout_s: float = 0.0) -> bool:
        futures = self._futures
        deadline = time.monotonic() + timeout_s
        while True:
            while futures and futures[0][1].is_done:
                msg, fut = futures.popleft()
                if fut.exception is not None:
                    self._failed.append((msg, fut.exception))
            if self._sent - len(futures) >= mark:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            # the oldest first (they are acknowledged about in order); its failure is taken above, with its message
            with contextlib.suppress(Exception):
                futures[0][1].get(timeout=left)

    def _failing(self) -> bool:
        return bool(self._failed)

    def _flush_producer(self, timeout_s: float) -> None:
        """``producer.flush`` until every message sent is acknowledged or failed. kafka-python (3.0.12) splits a
        batch the broker refuses as too large and queues its halves, but a flush waiting on that batch then
        raises ``UnknownError('Future not done')`` (the Java client's KAFKA-9312 returned early instead): the
        halves are flushed by the next round. Its flush waits up to the timeout for each batch in turn and then
        raises ``KafkaTimeoutError``: the deadline here is for them all."""
        deadline = time.monotonic() + timeout_s
        while self._futures:  # kafka-python wakes its sender thread even with nothing to send
            with contextlib.suppress(UnknownError, KafkaTimeoutError):  # a batch split in two; the time is up
                self.producer.flush(timeout=max(deadline - time.monotonic(), 0.0))
            if not self._settled(self._sent) and time.monotonic() >= deadline:
                raise DeliveryError(f"producing failed: {sum(not f.is_done for _, f in self._futures)} "
                                    f"message(s) not acknowledged within {timeout_s:g} s")
        errors = [e for _, e in self._failed if not isinstance(e, _REFUSALS)]
        if errors:
            self._failed = []
            raise DeliveryError(f"producing failed: {errors[0]}")

    def _take_refused(self) -> list[tuple[Outgoing, str]]:
        failed, self._failed = self._failed, []
        return [(m, f"{type(e).__name__}: {e}") for m, e in failed]

    def close(self, timeout_s: float = 10.0) -> None:
        """Close the producer once what it holds is acknowledged, or after ``timeout_s``: what the broker has not
        taken by then is dropped (the offsets of its records were not committed: they are read again).
        kafka-python 3.0.12 raises on that timeout and leaves the producer open, its sender thread retrying and its
        finaliser raising again at exit: its sender is then closed by force, which fails those batches."""
        try:
            self.producer.close(timeout=timeout_s)
        except (KafkaTimeoutError, UnknownError):
            left = sum(not f.is_done for _, f in self._futures)
            log.warning("closing the producer: %d message(s) the broker has not acknowledged are dropped (their "
                        "records' offsets were not committed)", left)
            self.producer._sender.force_close()  # no public way to drop what the broker did not take
            self.producer.close(timeout=FORCED_CLOSE_S)


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` is kafka-python's failure to reach any of the bootstrap servers (a client's start)."""
    return isinstance(error, KafkaTimeoutError) and "Unable to bootstrap" in str(error)


def wait_for_broker(cfg: KafkaConfig, timeout_s: float = 60.0) -> None:
    """Block until the cluster answers metadata requests (raises ``KafkaError`` after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(**client_options(cfg), request_timeout_ms=5000)
            admin.list_topics()
            admin.close()
            return
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def tail_topic(
    cfg: KafkaConfig,
    topic: str,
    until: Callable[[], bool] = lambda: False,
    timeout_s: float = 600.0,
    decode: Callable[[bytes], Any] = json.loads,
    idle_s: float = 0.0,
) -> Iterator[Any]:
    """Decoded values (JSON by default) of ``topic`` from the beginning (no group), while ``until()`` is true or
    records come; stops once ``until()`` is false and no record came for ``idle_s`` (at least one empty poll), or
    after ``timeout_s`` (``math.inf``: none; the topic is then awaited for ``max(idle_s, 30)`` s at most)."""
    consumer = KafkaConsumer(**client_options(cfg), enable_auto_commit=False, group_id=None)
    try:
        deadline = time.monotonic() + timeout_s
        found_by = time.monotonic() + max(idle_s, 30.0) if math.isinf(timeout_s) else deadline
        parts: set[int] | None = None
        while parts is None and time.monotonic() < found_by:
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                time.sleep(0.2)
        if not parts:
            return
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        last = time.monotonic()
        while time.monotonic() < deadline:
            alive = until()
            batch = consumer.poll(timeout_ms=500)
            for msgs in batch.values():
                for m in msgs:
                    yield decode(m.value)
            if batch:
                last = time.monotonic()
            elif not alive and time.monotonic() - last >= idle_s:
                return
    finally:
        consumer.close(autocommit=False)
