"""A compacted changelog topic for state that belongs to input partitions (kafka-python).

State made while reading input partition ``p`` (of any input topic) is written, keyed by sensor, to partition ``p``
of the changelog with the input topic in a header, through the worker's own producer, so it is flushed before the
offsets it reflects are committed. A worker given input partitions reads their changelog partitions to the end and
restores the newest value of each key before its first record (as Kafka Streams restores a state store). The
topic is created compacted (``cleanup.policy=compact``) with as many partitions as the largest input topic when
it is missing, and grown when an input topic grew. Its messages may be up to :data:`MAX_STATE_BYTES` (a sensor's
fine-tuned model grows with window × channels: an MLP family at 256 × 8 makes ~1.4 MB of JSON); the topic is
created to take them, and a baselines changelog made before with a smaller ``max.message.bytes`` is named at start
with the fix (``KafkaChangelog(large=True)``).
"""

from __future__ import annotations

import logging
import time

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, TopicAlreadyExistsError

from aestream.config import KafkaConfig
from aestream.errors import ConfigError
from aestream.kafka.kafka_python import client_options
from aestream.kafka.refusals import MAX_STATE_BYTES
from aestream.stream.messages import Outgoing, Partition

__all__ = ["SOURCE_TOPIC_HEADER", "KafkaChangelog"]

log = logging.getLogger(__name__)

SOURCE_TOPIC_HEADER = "aestream.source.topic"


class KafkaChangelog:
    """The changelog ``topic`` of the consumer group configured in ``cfg``. ``large``: its records may be large
    (sensors' own models): a topic made before with a smaller ``max.message.bytes`` is named with the fix."""

    def __init__(self, cfg: KafkaConfig, topic: str, timeout_s: float = 30.0, large: bool = False) -> None:
        self.cfg, self.topic, self.timeout_s, self.large = cfg, topic, timeout_s, large
        self._ready = False
        self._n_partitions = 0  # the topic's, as ensure left it

    def record(self, part: Partition, key: str, value: bytes) -> Outgoing:
        """The message that writes ``key``'s state made on input partition ``part``."""
        return Outgoing(self.topic, value, key.encode(), [(SOURCE_TOPIC_HEADER, part[0].encode())], part[1])

    def restore(self, parts: list[Partition]) -> dict[Partition, dict[str, bytes]]:
        """The newest value of every key written for each of the input partitions ``parts`` (tombstones remove),
        read in one pass."""
        if not parts:
            return {}
        if max(p for _, p in parts) >= self._n_partitions:  # an input topic grew since: so must the changelog
            self._ready = False
        self.ensure()
        wanted = {p: {t for t, q in parts if q == p} for _, p in parts}
        consumer = KafkaConsumer(**client_options(self.cfg), group_id=None, enable_auto_commit=False,
                                 max_partition_fetch_bytes=MAX_STATE_BYTES)
        try:
            tps = [TopicPartition(self.topic, p) for p in sorted(wanted)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            ends = consumer.end_offsets(tps)
            state: dict[Partition, dict[str, bytes]] = {}
            deadline = time.monotonic() + self.timeout_s
            while any(consumer.position(tp) < ends[tp] for tp in tps):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"restoring {self.topic} partitions {sorted(wanted)} took over "
                                       f"{self.timeout_s:.0f} s")
                for tp, msgs in consumer.poll(timeout_ms=500).items():
                    for m in msgs:
                        source = dict(m.headers or []).get(SOURCE_TOPIC_HEADER, b"").decode()
                        if m.key is None or source not in wanted[tp.partition]:
                            continue
                        values = state.setdefault((source, tp.partition), {})
                        if m.value is None:
                            values.pop(m.key.decode(), None)
                        else:
                            values[m.key.decode()] = m.value
        finally:
            consumer.close()
        log.info("restored %d key(s) of %s for %s", sum(map(len, state.values())), self.topic, parts)
        return state

    def ensure(self) -> None:
        """Create the topic (compacted) or grow it to the input topics' largest partition count (once; again when
        a restore is given a partition it lacks)."""
        if self._ready:
            return
        admin = KafkaAdminClient(**client_options(self.cfg), request_timeout_ms=int(self.timeout_s * 1000))
        consumer = KafkaConsumer(**client_options(self.cfg), group_id=None)
        try:
            need = max(len(consumer.partitions_for_topic(t) or ()) for t in self.cfg.input_topics) or 1
            have = len(consumer.partitions_for_topic(self.topic) or ())
            self._n_partitions = max(have, need)
            if not have:
                try:
                    admin.create_topics({self.topic: {"num_partitions": need,
                                                      "configs": {"cleanup.policy": "compact",
                                                                  "max.message.bytes": str(MAX_STATE_BYTES)}}},
                                        timeout_ms=int(self.timeout_s * 1000), wait_for_metadata=True)
                    log.info("created the changelog topic %s (%d partitions, compacted)", self.topic, need)
                except TopicAlreadyExistsError:
                    pass
            else:
                if have < need:
                    admin.create_partitions({self.topic: need})
                    log.info("grew the changelog topic %s to %d partitions", self.topic, need)
                self._check_configs(admin)
        finally:
            consumer.close()
            admin.close()
        self._ready = True

    def _check_configs(self, admin: KafkaAdminClient) -> None:
        """Refuse a topic (made before, or by hand) that is not compacted: its retention would delete the state of
        sensors whose state has not changed for ``retention.ms``. Warn when it refuses state messages below
        :data:`MAX_STATE_BYTES` (``large``): a refused one is dead-lettered, and the partition's next owner
        calibrates its sensor again."""
        try:
            described = admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, self.topic, configs=["max.message.bytes", "cleanup.policy"])],
                config_filter="all")  # the default too: only set ones are listed otherwise
            configs = described["topic"][self.topic]
            policy = str(configs["cleanup.policy"]["value"])
            limit = int(configs["max.message.bytes"]["value"])
        except (KafkaError, KeyError, TypeError, ValueError) as e:  # a broker or an ACL that does not say
            log.debug("could not read %s's configs: %s", self.topic, e)
            return
        if "compact" not in policy.split(","):
            raise ConfigError(f"the changelog topic {self.topic} has cleanup.policy={policy}: its retention would "
                              "delete the state of sensors that did not change within retention.ms. Make it "
                              "compacted: kafka-configs.sh --bootstrap-server HOST:PORT --alter --entity-type topics "
                              f"--entity-name {self.topic} --add-config cleanup.policy=compact")
        if self.large and limit < MAX_STATE_BYTES:
            log.warning("the changelog topic %s takes messages of at most %d bytes (max.message.bytes); a sensor's "
                        "fine-tuned model may need more, and a state message it refuses is dead-lettered (the "
                        "partition's next owner calibrates that sensor again). Raise it: kafka-configs.sh "
                        "--bootstrap-server HOST:PORT --alter --entity-type topics --entity-name %s --add-config "
                        "max.message.bytes=%d", self.topic, limit, self.topic, MAX_STATE_BYTES)
