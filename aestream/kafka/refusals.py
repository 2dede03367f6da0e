"""What both Kafka sinks do with a message the producer or the broker refuses for itself (too large, invalid).

Such a message is not an error of the step: raising would leave its offsets uncommitted, and the worker would
read and refuse it again, forever. It is tried once more alone (librdkafka fails every message of a batch the
broker refuses, the small ones too), then goes to the dead-letter topic
(:func:`aestream.stream.deadletters.route_refused`); a dead letter refused in turn is logged and dropped. Every
other failure still makes ``flush`` raise, so nothing unacknowledged is committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from aestream.stream.deadletters import is_dead_letter, route_refused
from aestream.stream.messages import Outgoing, Partition
from aestream.stream.phase import warn_metadata_refused

__all__ = ["MAX_STATE_BYTES", "OnRefused", "RefusingSink", "commit_failed"]

log = logging.getLogger(__name__)

MAX_STATE_BYTES = 16 * 1024 * 1024
"""The largest message both sinks send (their producers' limit): a changelog's state, since a sensor's fine-tuned
model grows with window × channels. The changelog topics are created to take it; other topics keep the broker's
limit, and what they refuse is dead-lettered."""

OnRefused = Callable[[str], None]  # a message was refused: "dead_lettered", or "dropped" (a dead letter itself)


def commit_failed(error: object, metadata_refused: bool = False,
                  metadata: Mapping[Partition, str] | None = None) -> None:
    """What both Kafka sources say when the broker did not commit offsets: it refused their metadata as too large
    (they commit without it from then on), or another failure (the group moved on, the broker is away)."""
    if metadata_refused:
        warn_metadata_refused(metadata or {})
    else:
        log.warning("offset commit failed, retried with the next one (a partition that moved is redone by its new "
                    "owner): %s", error)


class RefusingSink:
    """The base of both sinks: ``send``, ``flush``, ``mark`` and ``acked`` over a client's :meth:`_produce`,
    :meth:`_flush_producer`, :meth:`_take_refused`, :meth:`_settled` and :meth:`_failing`."""

    dead_letter_topic: str
    dead_letter_max_bytes: int
    on_refused: OnRefused | None
    _sent = 0  # messages queued so far: the marks count them

    def send(self, msg: Outgoing) -> None:
        error = self._produce(msg)
        if error is not None:  # refused before it was queued
            self._route(msg, error)

    def flush(self, timeout_s: float = 60.0) -> None:
        """Block until every sent message is acknowledged; raises if any failed but for a refusal of the message
        itself (so the step's offsets are not committed)."""
        self._flush_producer(timeout_s)
        refused = self._take_refused()
        while refused:
            msg, error = refused.pop(0)
            if not is_dead_letter(msg):  # alone: it may only have shared a batch with the message refused
                error = self._produce(msg) or self._retried(msg, timeout_s, refused)
                if not error:
                    continue
            self._route(msg, error)
        self._flush_producer(timeout_s)  # the dead letters
        for msg, error in self._take_refused():
            self._route(msg, error)  # dead letters, dropped

    def mark(self) -> int:
        """A mark after every message sent so far (:meth:`acked` says when they are all acknowledged)."""
        return self._sent

    def acked(self, mark: int, timeout_s: float = 0.0) -> bool:
        """Whether every message sent before ``mark`` is acknowledged, waiting up to ``timeout_s`` for them (by
        default not at all); ``False`` while any is not. Once they are all done, a failure among them (or after
        them) is settled as :meth:`flush` settles it, blocking: a refused message is dead-lettered, any other
        failure raises."""
        if not self._settled(mark, timeout_s):
            return False
        if self._failing():
            self.flush()
        return True

    def _retried(self, msg: Outgoing, timeout_s: float, refused: list[tuple[Outgoing, str]]) -> str:
        """``msg`` sent again alone: its refusal, or "" once delivered. The flush also settles what was sent
        before it (an earlier message's dead letter): their refusals join ``refused``, each routed as its own."""
        self._flush_producer(timeout_s)
        error = ""
        for m, e in self._take_refused():
            if m is msg:
                error = e
            else:
                refused.append((m, e))
        return error

    def _route(self, msg: Outgoing, error: str) -> None:
        outcome = route_refused(msg, error, self.send, self.dead_letter_topic, self.dead_letter_max_bytes)
        if self.on_refused is not None:
            self.on_refused(outcome)

    # -- the client's part --------------------------------------------------------------------------------------
    def _produce(self, msg: Outgoing) -> str | None:
        """Queue ``msg``; the reason when the client refuses it at once, else ``None``."""
        raise NotImplementedError

    def _flush_producer(self, timeout_s: float) -> None:
        """Wait for every queued message; raise on a failure that is no refusal."""
        raise NotImplementedError

    def _take_refused(self) -> list[tuple[Outgoing, str]]:
        """The messages the broker refused since the last call, with the reasons."""
        raise NotImplementedError

    def _settled(self, mark: int, timeout_s: float = 0.0) -> bool:
        """Whether every message queued before ``mark`` is acknowledged or failed, waiting up to ``timeout_s``."""
        raise NotImplementedError

    def _failing(self) -> bool:
        """Whether a message that is done failed (refused or else) and is not settled yet."""
        raise NotImplementedError
