"""Our own message types at the Kafka edge: what the edge hands in (:class:`Record`) and takes out
(:class:`Outgoing`). No Kafka client type crosses into the rest of the package."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from aestream.stream.codec import Block

__all__ = ["Outgoing", "Partition", "Record"]

Partition = tuple[str, int]


class Record(NamedTuple):
    """One consumed message, with its provenance (a tuple: one is made per message on the hot path)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    replay: bool = False
    decoded: Block | None = None  # the value, already decoded by the edge (kafka-python's fetch process)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to produce."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int | None = None  # None: the producer's partitioner (by key); set for a changelog
