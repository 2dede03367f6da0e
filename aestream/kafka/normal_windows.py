"""The normal-windows topic: workers send it sampled normal windows, the one ``aestream trainer`` reads all of it.

Workers write through their own producer, in the step that scored the window (so before its offsets are committed);
see :class:`~aestream.retrain.stage.ReservoirStage`. The topic is created, when missing, with as many partitions as
the largest input topic and a retention of ``retrain.max_age_s``: it *is* the trainer's state. A trainer that starts
(or restarts after a kill) reads it from ``max_age_s`` ago and has its reservoir back; it keeps no file and commits no
offsets. Partitions added to the topic later are read from their start as soon as the trainer's metadata shows them
(within seconds): workers send to them at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np
from kafka import KafkaConsumer, TopicPartition

from aestream.config import KafkaConfig
from aestream.kafka.kafka_python import METADATA_MAX_AGE_MS, client_options, ensure_topics
from aestream.retrain.stage import END_MS_HEADER, decode_window

__all__ = ["NormalWindowsFeed", "ensure_normal_windows_topic"]

log = logging.getLogger(__name__)


def ensure_normal_windows_topic(cfg: KafkaConfig, topic: str, max_age_s: float, timeout_s: float = 30.0) -> None:
    """Create ``topic`` (partitions of the largest input topic, retention ``max_age_s``) when it is missing."""
    consumer = KafkaConsumer(**client_options(cfg), group_id=None)
    try:
        if consumer.partitions_for_topic(topic):
            return
        n = max(len(consumer.partitions_for_topic(t) or ()) for t in cfg.input_topics) or 1
    finally:
        consumer.close()
    if ensure_topics(cfg, {topic: n}, timeout_s, {"retention.ms": str(int(max_age_s * 1000))}):
        log.info("created the normal-windows topic %s (%d partitions, retention %.0f s)", topic, n, max_age_s)


class NormalWindowsFeed:
    """Reads every partition of ``topic`` from ``max_age_s`` ago on (no consumer group: nothing to share)."""

    def __init__(self, cfg: KafkaConfig, topic: str, max_age_s: float, timeout_s: float = 30.0) -> None:
        ensure_normal_windows_topic(cfg, topic, max_age_s, timeout_s)
        self.topic = topic
        self.n_bad = 0
        self._consumer = KafkaConsumer(**client_options(cfg), group_id=None, enable_auto_commit=False,
                                       metadata_max_age_ms=METADATA_MAX_AGE_MS)  # new partitions seen soon
        self._parts = set(self._consumer.partitions_for_topic(topic))
        tps = [TopicPartition(topic, p) for p in sorted(self._parts)]
        self._consumer.assign(tps)
        since = max(0, int((time.time() - max_age_s) * 1000))  # a max_age_s longer than the epoch: all of it
        starts = self._consumer.offsets_for_times({tp: since for tp in tps})
        self._ends = self._consumer.end_offsets(tps)
        for tp in tps:  # nothing that recent: from the end as it is now (not as it is at the first poll)
            found = starts.get(tp)
            self._consumer.seek(tp, self._ends[tp] if found is None else found.offset)

    def caught_up(self) -> bool:
        """Whether the windows that were in the topic when the feed opened have all been read."""
        return all(self._consumer.position(tp) >= end for tp, end in self._ends.items())

    def poll(self, timeout_ms: int = 500) -> Iterator[tuple[str, int, np.ndarray]]:
        """The windows that arrived: ``(sensor, end_ms, values)``; a message that is not one is logged and skipped."""
        self._follow_new_partitions()
        for msgs in self._consumer.poll(timeout_ms=timeout_ms, max_records=5000).values():
            for m in msgs:
                try:
                    end_ms = int(dict(m.headers or [])[END_MS_HEADER])
                    yield (m.key or b"").decode(), end_ms, decode_window(m.value)
                except (KeyError, ValueError, TypeError, OSError) as e:
                    self.n_bad += 1
                    log.warning("%s partition %d offset %d is not a normal window (%s): skipped", self.topic,
                                m.partition, m.offset, e)

    def close(self) -> None:
        self._consumer.close()

    def _follow_new_partitions(self) -> None:
        """Read partitions added to the topic since it was opened (the consumer's metadata, refreshed every
        :data:`METADATA_MAX_AGE_MS`) from their start: all they hold was written after they were made."""
        new = self._consumer.partitions_for_topic(self.topic) - self._parts
        if not new:
            return
        self._parts |= new
        self._consumer.assign([TopicPartition(self.topic, p) for p in sorted(self._parts)])
        self._consumer.seek_to_beginning(*(TopicPartition(self.topic, p) for p in sorted(new)))
        log.info("%s has %d partition(s) now: reading the new one(s) %s from their start", self.topic,
                 len(self._parts), sorted(new))
