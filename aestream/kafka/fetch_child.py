"""The fetch process of :class:`aestream.kafka.kafka_python.KafkaSource` (``kafka.fetch_process``).

kafka-python parses fetch responses in Python: in the worker's process that work takes the GIL from windowing and
scoring. This program, run by its path (so it imports kafka-python and the standard library, not torch), reads the
partitions the worker's group member was given from the offsets it names, and sends the records back over the socket
it inherits. It is not a group member and commits nothing: group membership, offsets and rebalances stay with the
worker.

With the stream's decoder settings (``decode``), it also decodes the batched messages it reads into arrays
(:meth:`aestream.stream.codec.ReadingDecoder.blocks`: numpy and msgspec, still not torch), so that work leaves the
worker's GIL too; single readings and messages with a fault go as they came, for the worker to decode.

Frames (pickles, :class:`multiprocessing.connection.Connection`), worker → here: the consumer's options first, then
``("assign", epoch, {(topic, partition): offset or None})`` (``None``: from ``auto_offset_reset``) and ``("stop",)``;
here → worker: ``("records", epoch, [(topic, partition, offset, key, value, timestamp), ...], blocks)`` with the
epoch of the assignment they were read under and each record's block or ``None`` (``blocks``: ``None`` without a
decoder), and ``("error", text)`` before it exits on an error.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]  # run by path: this folder's modules are not to shadow kafka-python's imports
    sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # aestream's

from multiprocessing.connection import Connection
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from aestream.ops.logs import configure_child_logging

log = logging.getLogger("aestream.fetch")

IDLE_WAIT_S = 0.5  # with nothing assigned, how long to wait for a command
POLL_TIMEOUT_MS = 100  # with partitions, how long one fetch waits for records (commands are read between fetches)
# A light stream is fetched in fewer, larger responses: with kafka-python's defaults (1 byte, 500 ms) each fetch
# returned the few records that had arrived, and the parse, pickle and send per batch lengthened the every-window
# p99 at 12,000 readings/s: 392 ms starting and 104 in service, against 88 and 57 with these (one run each).
FETCH_MIN_BYTES = 64 * 1024
FETCH_MAX_WAIT_MS = 5
IDLE_SLEEP_MS = 5
"""How long kafka-python's poll sleeps when its fetcher has nothing in flight and nothing buffered while partitions
are assigned (see :func:`set_idle_sleep`)."""
UNASSIGNED_IDLE_SLEEP_MS: int = KafkaConsumer.DEFAULT_CONFIG["retry_backoff_ms"]
"""The same sleep without partitions: kafka-python's own (its ``retry_backoff_ms`` default, 100 ms)."""


def set_idle_sleep(consumer: KafkaConsumer, assigned: bool = True) -> KafkaConsumer:
    """Set the sleep kafka-python's poll takes when it finds its fetcher idle: :data:`IDLE_SLEEP_MS` while partitions
    are ``assigned``, else :data:`UNASSIGNED_IDLE_SLEEP_MS`.

    kafka-python 3.0.12's ``poll`` sleeps ``retry_backoff_ms`` (100 ms) when, after draining its buffer, it has no
    fetch in flight to wait on. A fetch response that lands between that drain and the next fetch request leaves it
    so: the partition has records buffered, so no fetch is sent, and the done request is dropped from those it waits
    on. The records then sit in the buffer through the whole sleep. At 12,000 readings/s this cost 100 ms polls
    several times in 10 s, and those polls set the worker's p99 (about 120 ms against 4 ms for a consumer polling every
    5 ms). Without partitions every poll finds nothing to wait on, and a 5 ms sleep would loop for nothing (9 % of a
    core against 1.6 %, dev broker). Only the consumer's own copy of the setting changes: its coordinator, fetcher and
    network client took theirs when it was built, and still back off 100 ms after an error."""
    consumer.config["retry_backoff_ms"] = IDLE_SLEEP_MS if assigned else UNASSIGNED_IDLE_SLEEP_MS
    return consumer


def send_next_fetch(consumer: KafkaConsumer, batch: dict[TopicPartition, list[Any]], max_records: int) -> None:
    """After a poll that returned ``batch`` (at most ``max_records``), send the next fetch request now, so the broker
    answers while the records are processed, when a partition has more records at the broker than it handed out
    (its high watermark, from the fetch that carried them) and no fetch is in flight.

    kafka-python 3.0.12's poll sends the next fetch once its buffer is empty: at the start of a poll, or before it
    returns what it had buffered. A poll that waits for a response returns its records without sending one. When
    one response holds fewer records than a poll may take (batched messages: a producer batch of ~100 against
    ``max_poll_records`` 2,000), every poll under a backlog waited so: one round trip a poll, ~3 ms of each ~17 ms
    step in service (dev broker). A poll that returned fewer than ``max_records`` emptied the buffer; one that
    returned ``max_records`` may have more buffered, which the next poll takes first. Caught up, nothing is sent:
    a fetch sent then returns the first few records to arrive mid-step, and the every-window p50 at 17,000
    readings/s rose from 6–7 ms to 11–17 ms (two runs each, starting and in service)."""
    n = sum(map(len, batch.values()))
    if not 0 < n < max_records:
        return
    if not any((consumer.highwater(tp) or 0) > msgs[-1].offset + 1 for tp, msgs in batch.items() if msgs):
        return
    fetcher = consumer._fetcher
    if not fetcher.in_flight_fetches():
        fetcher.send_fetches()


def serve(conn: Connection) -> None:
    options: dict[str, Any] = conn.recv()
    max_records = options.pop("max_poll_records")
    decode = options.pop("decode", None)
    blocks = None
    if decode is not None:  # the stream's decoder settings: batched messages go out decoded too
        from aestream.stream.codec import ReadingDecoder

        blocks = ReadingDecoder(*decode).blocks
    consumer = set_idle_sleep(KafkaConsumer(**options, group_id=None, enable_auto_commit=False,
                                            max_poll_records=max_records, fetch_min_bytes=FETCH_MIN_BYTES,
                                            fetch_max_wait_ms=FETCH_MAX_WAIT_MS))
    epoch, assigned = 0, False
    try:
        while True:
            while conn.poll(0 if assigned else IDLE_WAIT_S):
                command = conn.recv()
                if command[0] == "stop":
                    return
                epoch, positions = command[1], command[2]
                tps = {TopicPartition(t, p): offset for (t, p), offset in positions.items()}
                consumer.assign(list(tps))
                for tp, offset in tps.items():
                    if offset is not None:
                        consumer.seek(tp, offset)
                assigned = bool(tps)
            if not assigned:
                continue
            batch = consumer.poll(timeout_ms=POLL_TIMEOUT_MS, max_records=max_records)
            if batch:
                rows = [(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
                        for msgs in batch.values() for m in msgs]
                send_next_fetch(consumer, batch, max_records)
                conn.send(("records", epoch, rows, blocks([r[4] for r in rows]) if blocks else None))
    finally:
        consumer.close(autocommit=False)


def main() -> None:
    # the worker stops us ("stop", or its end of the socket closing): a Ctrl-C or a SIGTERM sent to the whole
    # process group must not end the fetching before the worker's last step and commit
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_child_logging("fetch")  # in the worker's form: plain lines, or JSON under --log-json
    conn = Connection(int(sys.argv[1]))
    try:
        serve(conn)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the worker went away
    except Exception as e:
        log.exception("failed: %s: %s", type(e).__name__, e)  # a traceback in the log's form, not on bare stderr
        try:
            conn.send(("error", f"{type(e).__name__}: {e}"))
        except OSError:
            pass
        sys.exit(1)


if __name__ == "__main__":
    main()
