"""What the worker needs from its edges: a source of records, a sink for messages, a source of models.

The Kafka clients (:mod:`aestream.kafka.kafka_python`, :mod:`aestream.kafka.confluent`) implement the first two;
:class:`~aestream.models.store.ModelStore` the third. Tests and benchmarks inject their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from aestream.models.bundle import ModelBundle
from aestream.stream.messages import Outgoing, Partition, Record

__all__ = ["AckedSink", "AsyncCommitSource", "Changelog", "CommitDone", "ModelSource", "ModelStoreLike", "Sink",
           "Source"]


class Source(Protocol):
    """Where records come from. ``commit`` gets ``metadata`` (per partition, committed with its offset) only when
    there is some. A source that rebuilds partitions may also have ``committed_metadata() -> dict[Partition,
    str]``: the metadata committed with the offsets it replays up to (``""`` where there was none), each handed
    out once."""

    def poll(self, timeout_ms: int | None = None, max_records: int | None = None) -> list[Record]: ...
    def commit(self, offsets: dict[Partition, int], metadata: dict[Partition, str] | None = None) -> bool: ...
    def close(self) -> None: ...


CommitDone = Callable[[dict[Partition, int], bool], None]
"""Told how an asynchronous commit ended: the offsets it was given, and whether the broker committed them."""


@runtime_checkable
class AsyncCommitSource(Source, Protocol):
    """A source that also commits without waiting for the broker (both Kafka sources): ``commit_async`` sends the
    commit and returns; ``done(offsets, ok)`` is called on the caller's thread from a later ``poll`` or commit,
    once the broker answered."""

    def commit_async(self, offsets: dict[Partition, int], metadata: dict[Partition, str] | None,
                     done: CommitDone) -> None: ...


class Sink(Protocol):
    def send(self, msg: Outgoing) -> None: ...
    def flush(self, timeout_s: float = 60.0) -> None: ...
    def close(self, timeout_s: float = 10.0) -> None: ...


@runtime_checkable
class AckedSink(Sink, Protocol):
    """A sink that says, without blocking, when what it was given is acknowledged (both Kafka sinks): the worker
    then commits without stopping its loop for a flush. ``mark()`` stands after every message sent so far;
    ``acked(mark)`` says whether all of those are acknowledged, waiting up to ``timeout_s`` for them."""

    def mark(self) -> int: ...
    def acked(self, mark: int, timeout_s: float = 0.0) -> bool: ...


class Changelog(Protocol):
    """Where state that belongs to an input partition is kept (:class:`aestream.kafka.changelog.KafkaChangelog`):
    ``record`` makes the message that writes a key's value (sent through the worker's sink, so it is flushed before
    the offsets it reflects are committed), ``restore`` reads back the newest value of each key of some input
    partitions, partition by partition (a key's state is written to the partition it was restored from)."""

    def record(self, part: Partition, key: str, value: bytes) -> Outgoing: ...
    def restore(self, parts: list[Partition]) -> dict[Partition, dict[str, bytes]]: ...


class ModelSource(Protocol):
    """Where the worker gets its model: ``current()`` names the serving version, ``load(v)`` loads it. A source
    may also list its versions, oldest first (``versions() -> list[str]``): a worker whose current version is
    refused at start then serves the newest older one that loads."""

    def current(self) -> str | None: ...
    def load(self, version: str | None = None, device: str = "cpu") -> ModelBundle: ...


class ModelStoreLike(ModelSource, Protocol):
    """A store models are published to and rolled back in: :class:`~aestream.models.store.ModelStore` (a
    directory) or :class:`~aestream.kafka.models_topic.KafkaModelStore` (a topic). ``held()`` names the version a
    rollback holds in service (nothing is published over it until ``resume()``)."""

    def versions(self) -> list[str]: ...
    def held(self) -> str | None: ...
    def publish(self, bundle: ModelBundle, make_current: bool = True) -> str: ...
    def rollback(self, version: str | None = None) -> str: ...
    def resume(self) -> str | None: ...
    def meta(self, version: str) -> dict[str, Any]: ...
