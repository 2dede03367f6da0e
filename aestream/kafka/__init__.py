"""The Kafka edge: the only package that imports a Kafka client (kafka-python in :mod:`~aestream.kafka.kafka_python`,
librdkafka in :mod:`~aestream.kafka.confluent`); everything else sees the protocols of :mod:`~aestream.kafka.protocols`
and the small records of :mod:`aestream.stream.messages`."""

from aestream.kafka.protocols import Changelog, ModelSource, Sink, Source

__all__ = ["Changelog", "ModelSource", "Sink", "Source"]
