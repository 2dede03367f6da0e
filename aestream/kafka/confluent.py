"""The optional confluent-kafka (librdkafka) edge, behind the same interface as :mod:`aestream.kafka.kafka_python`.

Chosen with ``kafka.client = "confluent"``; needs ``pip install 'aestream[confluent]'``. Same semantics:
manual commits of what the worker says (with its metadata), a lookback replay of newly assigned partitions
(records flagged ``replay=True``; the metadata committed with the offset they replay up to is handed out by
``committed_metadata``), an idempotent acks=all producer whose ``flush`` raises if any delivery failed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from aestream.config import KafkaConfig
from aestream.errors import DeliveryError
from aestream.kafka.protocols import CommitDone
from aestream.kafka.refusals import MAX_STATE_BYTES, OnRefused, RefusingSink, commit_failed
from aestream.stream.messages import Outgoing, Partition, Record
from aestream.stream.phase import warn_metadata_refused

__all__ = ["ConfluentSink", "ConfluentSource", "confluent_options", "missing_feature"]

log = logging.getLogger(__name__)

# errors of one message that no retry cures (its size, its contents): dead-lettered, not raised
_REFUSALS = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD,
                       KafkaError.INVALID_MSG, KafkaError.INVALID_MSG_SIZE})

# a send to a partition the producer's metadata does not list (one added since) waits this long for it to appear,
# asking for the metadata every METADATA_RETRY_S; the same bound as kafka-python's max_block_ms
PARTITION_WAIT_S = 60.0
METADATA_RETRY_S = 0.1

METADATA_MAX_AGE_MS = 5_000

# the lag's requests to the broker (watermarks, committed offsets), on the loop's thread
LAG_TIMEOUT_S = 2.0

# an asynchronous commit: what librdkafka was asked (the partitions still ours), the offsets given, the metadata
_AsyncCommit = tuple[dict[Partition, int], dict[Partition, int], dict[Partition, str], CommitDone]


def confluent_options(cfg: KafkaConfig) -> dict[str, Any]:
    """librdkafka settings for connection and security (SASL/SSL passed through when set). Its log lines go to the
    logger ``librdkafka`` (held at WARNING as kafka-python's ``kafka``), in aestream's form (``--log-json`` too),
    not straight to stderr."""
    opts: dict[str, Any] = {
        "bootstrap.servers": ",".join(cfg.bootstrap_servers),
        "client.id": cfg.client_id,
        "security.protocol": cfg.security_protocol,
        "logger": logging.getLogger("librdkafka"),
    }
    optional = {
        "sasl.mechanism": cfg.sasl_mechanism,
        "sasl.username": cfg.sasl_username,
        "sasl.password": cfg.sasl_password,
        "ssl.ca.location": cfg.ssl_cafile,
        "ssl.certificate.location": cfg.ssl_certfile,
        "ssl.key.location": cfg.ssl_keyfile,
        "ssl.key.password": cfg.ssl_password,
    }
    opts.update({k: v for k, v in optional.items() if v})
    return opts


def missing_feature(feature: str) -> str | None:
    """Why this librdkafka lacks ``feature`` (a ``builtin.features`` name such as ``sasl_gssapi``), or ``None``
    when it has it: librdkafka refuses a client that requires a feature it was built without."""
    try:
        Producer({"builtin.features": feature})
    except KafkaException as e:
        return str(e.args[0].str())
    return None


CONSUMER_CLOSE_S = 15.0
"""How long a stop waits for librdkafka's consumer to close: far more than a close with the broker up takes (a
member left behind holds its partitions until its session timeout), and with the last flush's 20 s inside the
60 s that ``deploy/`` gives a stop."""


class ConfluentSource:
    """A consumer-group member on librdkafka; see :class:`aestream.kafka.kafka_python.KafkaSource`."""

    def __init__(
        self,
        cfg: KafkaConfig,
        on_revoke: Callable[[list[Partition]], None] | None = None,
        on_assign: Callable[[list[Partition]], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.on_revoke = on_revoke
        self.on_assign = on_assign
        self._replay_until: dict[Partition, int] = {}
        self._metadata: dict[Partition, str] = {}
        self._send_metadata = True  # until the broker refuses it as too large
        self._assigned: set[Partition] = set()
        self._commits: deque[_AsyncCommit] = deque()  # sent, not answered yet
        self.consumer = Consumer({
            **confluent_options(cfg),
            "group.id": cfg.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": cfg.auto_offset_reset,
            "isolation.level": cfg.isolation_level,
            "session.timeout.ms": cfg.session_timeout_ms,
            "heartbeat.interval.ms": cfg.heartbeat_interval_ms,
            "max.poll.interval.ms": cfg.max_poll_interval_ms,
            # an input partition added while the group runs is assigned within seconds, as kafka-python's
            # metadata_max_age_ms makes it (librdkafka's default: 5 minutes)
            "topic.metadata.refresh.interval.ms": METADATA_MAX_AGE_MS,
            "on_commit": self._commit_answered,
        })
        # subscribed at the first poll: librdkafka joins the group in the background, and a member that does not
        # poll (a worker waiting for its first model) would hold partitions that no other member then reads, and
        # stall the group's rebalances, until max.poll.interval.ms (kafka-python joins in poll)
        self._subscribed = False

    def _assigned_cb(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        parts = sorted((tp.topic, tp.partition) for tp in tps)
        self._assigned.update(parts)
        if self.on_assign:
            self.on_assign(parts)
        lookback = self.cfg.rebuild_lookback_messages
        if lookback > 0 and tps:
            committed = consumer.committed(tps, timeout=10)
            for tp in committed:
                if tp.offset in (OFFSET_INVALID,) or tp.offset < 0:
                    continue
                low, _ = consumer.get_watermark_offsets(tp, timeout=10)
                start = max(low, tp.offset - lookback)
                if start < tp.offset:
                    self._replay_until[(tp.topic, tp.partition)] = tp.offset
                    self._metadata[(tp.topic, tp.partition)] = _metadata(tp)
                    tp.offset = start
                    log.info("rebuilding %s[%d]: replaying offsets %d..%d", tp.topic, tp.partition, start,
                             self._replay_until[(tp.topic, tp.partition)] - 1)
            consumer.assign(committed)

    def _revoked_cb(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        parts = [(tp.topic, tp.partition) for tp in tps]
        for p in parts:
            self._replay_until.pop(p, None)
            self._metadata.pop(p, None)
            self._assigned.discard(p)
        if self.on_revoke and parts:
            self.on_revoke(parts)

    def assignment(self) -> set[Partition]:
        return set(self._assigned)

    def poll(self, timeout_ms: int | None = None, max_records: int | None = None) -> list[Record]:
        """The records waiting, up to ``max_records``; with none, the first to come within the timeout and those
        behind it. ``consume`` alone waits out the whole timeout for a full batch (librdkafka's batch consume, in
        confluent-kafka 2.12): at a low rate every reading waited ``poll_timeout_ms`` (200 ms) to be read."""
        timeout = (self.cfg.poll_timeout_ms if timeout_ms is None else timeout_ms) / 1000
        n = max_records or self.cfg.max_poll_records
        if not self._subscribed:
            self.consumer.subscribe(list(self.cfg.input_topics), on_assign=self._assigned_cb,
                                    on_revoke=self._revoked_cb)
            self._subscribed = True
        msgs = self.consumer.consume(num_messages=n, timeout=0)
        if not msgs and timeout > 0:
            first = self.consumer.poll(timeout)
            if first is not None:
                msgs = [first, *(self.consumer.consume(num_messages=n - 1, timeout=0) if n > 1 else [])]
        out: list[Record] = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                continue
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            assert topic is not None and partition is not None and offset is not None  # a message, not an error
            part = (topic, partition)
            until = self._replay_until.get(part)
            replay = until is not None and offset < until
            if until is not None and offset + 1 >= until:
                del self._replay_until[part]
            out.append(Record(part[0], part[1], offset, m.key(), m.value(), m.timestamp()[1], replay))
        return out

    def committed_metadata(self) -> dict[Partition, str]:
        """See :meth:`aestream.kafka.kafka_python.KafkaSource.committed_metadata`."""
        out, self._metadata = self._metadata, {}
        return out

    def commit(self, offsets: dict[Partition, int], metadata: dict[Partition, str] | None = None) -> bool:
        """See :meth:`aestream.kafka.kafka_python.KafkaSource.commit`."""
        todo, meta = self._to_commit(offsets, metadata)
        if not todo:
            return True
        try:
            try:
                self._commit(todo)
            except KafkaException as e:
                if e.args[0].code() != KafkaError.OFFSET_METADATA_TOO_LARGE:
                    raise
                self._send_metadata = False
                warn_metadata_refused(meta)
                self._commit([_offset(tp.topic, tp.partition, tp.offset, None) for tp in todo])
            return True
        except KafkaException as e:
            commit_failed(e)
            return False

    def _to_commit(self, offsets: dict[Partition, int], metadata: dict[Partition, str] | None
                   ) -> tuple[list[TopicPartition], dict[Partition, str]]:
        """See :meth:`aestream.kafka.kafka_python.KafkaSource._to_commit`."""
        meta = (metadata if self._send_metadata else None) or {}
        return [_offset(t, p, o, meta.get((t, p))) for (t, p), o in offsets.items() if (t, p) in self._assigned], meta

    def _commit(self, todo: list[TopicPartition]) -> None:
        """A synchronous commit that raises a partition's error too (librdkafka reports those per partition)."""
        done = self.consumer.commit(offsets=todo, asynchronous=False) or []
        failed = [tp.error for tp in done if tp.error is not None]
        if failed:
            raise KafkaException(failed[0])

    def commit_async(self, offsets: dict[Partition, int], metadata: dict[Partition, str] | None,
                     done: CommitDone) -> None:
        """See :meth:`aestream.kafka.kafka_python.KafkaSource.commit_async` (librdkafka answers in ``on_commit``,
        served by a later poll)."""
        todo, meta = self._to_commit(offsets, metadata)
        if not todo:
            done(offsets, True)  # none is ours any more: nothing to commit, nothing to retry
            return
        sent = {(tp.topic, tp.partition): tp.offset for tp in todo}
        self._commits.append((sent, offsets, meta, done))
        try:
            self.consumer.commit(offsets=todo, asynchronous=True)
        except KafkaException as e:
            self._commits.pop()
            commit_failed(e)
            done(offsets, False)

    def _commit_answered(self, err: KafkaError | None, tps: list[TopicPartition]) -> None:
        """librdkafka's answer to a commit (``on_commit``): the asynchronous commit it answers is told."""
        sent = {(tp.topic, tp.partition): tp.offset for tp in tps}
        found = next((c for c in self._commits if c[0] == sent), None)
        if found is None:
            return  # a synchronous commit's answer: commit() read it
        self._commits.remove(found)
        _, offsets, meta, done = found
        failed = err if err is not None else next((tp.error for tp in tps if tp.error is not None), None)
        if failed is None:
            done(offsets, True)
            return
        refused = failed.code() == KafkaError.OFFSET_METADATA_TOO_LARGE and self._send_metadata
        if refused:
            self._send_metadata = False
        commit_failed(failed, refused, meta)
        done(offsets, False)

    def lag(self) -> dict[Partition, int]:
        """Messages left to read per assigned partition: from the watermark the fetches brought (asked for until
        the first came) to the position, or, before a message of the partition was read, to its committed
        offset or where ``auto_offset_reset`` starts it."""
        out = {}
        for t, p in self._assigned:
            tp = TopicPartition(t, p)
            low, high = self.consumer.get_watermark_offsets(tp, timeout=LAG_TIMEOUT_S, cached=True)
            if high < 0:  # no fetch answered yet
                low, high = self.consumer.get_watermark_offsets(tp, timeout=LAG_TIMEOUT_S)
            pos = self.consumer.position([tp])[0].offset
            if pos < 0:
                pos = self.consumer.committed([tp], timeout=LAG_TIMEOUT_S)[0].offset
            if pos < 0:
                pos = low if self.cfg.auto_offset_reset == "earliest" else high
            out[(t, p)] = max(high - pos, 0)
        return out

    def close(self) -> None:
        """Leave the group and release librdkafka's threads. librdkafka's close has no timeout and, with the group
        coordinator away (a stop during an outage), waited more than 45 s: it runs on a thread given
        ``CONSUMER_CLOSE_S``, then is left behind (the group drops this member after its session timeout)."""
        closing = threading.Thread(target=self.consumer.close, name="aestream-consumer-close", daemon=True)
        closing.start()
        closing.join(CONSUMER_CLOSE_S)
        if closing.is_alive():
            log.warning("the consumer did not close within %g s (is the broker reachable?): left behind",
                        CONSUMER_CLOSE_S)


def _metadata(tp: TopicPartition) -> str:
    """The metadata committed with ``tp``'s offset, ``""`` for none. librdkafka reads metadata as a C string:
    an empty one comes back as ``"\\x00"``, and one that kafka-python committed (no NUL at its end) may come back
    with bytes past its end, which are not always UTF-8 (:func:`~aestream.stream.phase.decode_phases` ignores
    what follows the phases; undecodable, the partition counts as committed without them)."""
    try:
        text = tp.metadata
    except UnicodeDecodeError as e:
        log.warning("the metadata committed on %s[%d] is not UTF-8 as confluent-kafka reads it (%s): taken as none",
                    tp.topic, tp.partition, e)
        return ""
    return "" if text in (None, "\x00") else str(text)


def _offset(topic: str, partition: int, offset: int, metadata: str | None) -> TopicPartition:
    """An offset to commit; without metadata unless there is some (an empty string is committed as "\x00")."""
    if metadata:
        return TopicPartition(topic, partition, offset, metadata)
    return TopicPartition(topic, partition, offset)


class ConfluentSink(RefusingSink):
    """An idempotent librdkafka producer (acks=all); refused messages as in
    :class:`~aestream.kafka.refusals.RefusingSink`."""

    def __init__(self, cfg: KafkaConfig, linger_ms: int = 5, on_refused: OnRefused | None = None) -> None:
        # murmur2, as the Java client and kafka-python: a sensor's events go to the same partition with either client
        self.producer = Producer({**confluent_options(cfg), "enable.idempotence": True, "acks": "all",
                                  "linger.ms": linger_ms, "partitioner": "murmur2_random",
                                  "message.max.bytes": MAX_STATE_BYTES})
        self.dead_letter_topic, self.dead_letter_max_bytes = cfg.dead_letter_topic, cfg.dead_letter_max_bytes
        self.on_refused = on_refused
        self._errors: list[str] = []
        self._refusals: list[tuple[Outgoing, str]] = []
        self._waiting: deque[int] = deque()  # the numbers of the messages queued and not yet seen done, in order
        self._done: set[int] = set()  # done (delivery reported), out of order across partitions

    def _delivered(self, sent: Outgoing, number: int, err: Any, _report: Any) -> None:
        self._done.add(number)
        if err is None:
            return
        if err.code() in _REFUSALS:
            self._refusals.append((sent, f"{err.name()}: {err.str()}"))
        else:
            self._errors.append(str(err))

    def _produce(self, msg: Outgoing) -> str | None:
        number, deadline = self._sent, 0.0
        while True:
            try:
                self.producer.produce(msg.topic, value=msg.value, key=msg.key,
                                      headers=list(msg.headers) or None,  # type: ignore[arg-type]
                                      partition=-1 if msg.partition is None else msg.partition,  # -1: by key
                                      # the report's message has no headers: a refused one is resent from ours
                                      on_delivery=functools.partial(self._delivered, msg, number))
                self._waiting.append(number)
                self._sent += 1
                return None
            except BufferError:  # local queue full: serve delivery reports, then retry
                self.producer.poll(0.05)
            except KafkaException as e:  # above message.max.bytes (refused before it is queued), or else
                err = e.args[0]
                if isinstance(err, KafkaError) and err.code() == KafkaError._UNKNOWN_PARTITION:
                    deadline = deadline or time.monotonic() + PARTITION_WAIT_S
                    self._await_partition(msg.topic, e, deadline)  # one added since the metadata: a grown changelog
                    continue
                if not isinstance(err, KafkaError) or err.code() not in _REFUSALS:
                    raise
                return f"{err.name()}: {err.str()}"

    def _await_partition(self, topic: str, error: KafkaException, deadline: float) -> None:
        """Ask for ``topic``'s metadata (librdkafka's own refresh comes every ``topic.metadata.refresh.interval.ms``,
        5 minutes by default) before the send is tried again; raise once ``deadline`` has passed."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeliveryError(f"producing to {topic} failed: {error.args[0]} (its metadata does not list the "
                                "partition); the records since the last commit are read again") from error
        with contextlib.suppress(KafkaException):  # the broker away: tried again until the deadline
            self.producer.list_topics(topic, timeout=min(left, 1.0))
        time.sleep(min(METADATA_RETRY_S, left))

    def _settled(self, mark: int, timeout_s: float = 0.0) -> bool:
        waiting, done = self._waiting, self._done
        deadline = time.monotonic() + timeout_s
        wait = 0.0
        while True:
            self.producer.poll(wait)  # serves the delivery reports that came (waits up to ``wait`` for one)
            while waiting and waiting[0] in done:
                done.discard(waiting.popleft())
            if not waiting or waiting[0] >= mark:
                return True
            wait = deadline - time.monotonic()
            if wait <= 0:
                return False

    def _failing(self) -> bool:
        return bool(self._errors or self._refusals)

    def _flush_producer(self, timeout_s: float) -> None:
        left = self.producer.flush(timeout_s)
        if not left:  # every report served
            self._waiting.clear()
            self._done.clear()
        if left or self._errors:
            errors, self._errors = self._errors, []
            raise DeliveryError(f"producing failed: {left} undelivered, errors {errors[:3]}")

    def _take_refused(self) -> list[tuple[Outgoing, str]]:
        out, self._refusals = self._refusals, []
        return out

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued, then release librdkafka's threads (it has no close of its own). What the broker
        has not taken within ``timeout_s`` is purged (the offsets of its records were not committed)."""
        left = self.producer.flush(timeout_s)
        if left:
            log.warning("closing the producer: %d message(s) the broker has not acknowledged are dropped (their "
                        "records' offsets were not committed)", left)
            self.producer.purge()
            self.producer.flush(0)  # their delivery reports
        self.producer = None  # type: ignore[assignment]
