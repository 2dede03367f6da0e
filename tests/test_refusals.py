"""RefusingSink's flush, over a stand-in client: a message the broker refused is dead-lettered, one that only
shared its batch goes through alone, and each refusal is blamed on its own message."""

from __future__ import annotations

from aestream.kafka.refusals import RefusingSink
from aestream.stream.messages import Outgoing


class _Client(RefusingSink):
    """Refuses every message whose value starts with BIG (too large), its dead letter included."""

    def __init__(self) -> None:
        self.dead_letter_topic, self.dead_letter_max_bytes = "dlq", 900_000
        self.outcomes: list[str] = []
        self.on_refused = self.outcomes.append
        self.queue: list[Outgoing] = []
        self.refused: list[tuple[Outgoing, str]] = []
        self.delivered: list[Outgoing] = []

    def _produce(self, msg: Outgoing) -> str | None:
        self.queue.append(msg)
        self._sent += 1
        return None

    def _flush_producer(self, timeout_s: float) -> None:
        for m in self.queue:
            (self.refused.append((m, "MSG_SIZE_TOO_LARGE")) if m.value.startswith(b"BIG") else
             self.delivered.append(m))
        self.queue = []

    def _take_refused(self) -> list[tuple[Outgoing, str]]:
        out, self.refused = self.refused, []
        return out


def test_a_message_that_only_shared_a_refused_batch_is_delivered_and_a_refused_dead_letter_is_dropped() -> None:
    sink = _Client()
    big, small = Outgoing("anomalies", b"BIG" + b"x" * 10, b"a"), Outgoing("anomalies", b"small", b"b")
    sink.refused = [(big, "MSG_SIZE_TOO_LARGE"), (small, "MSG_SIZE_TOO_LARGE")]  # the batch they shared
    sink.flush()
    assert [(m.topic, m.key) for m in sink.delivered] == [("anomalies", b"b")], "small went through, alone"
    # big's dead letter (its value copied) was refused in turn: dropped and counted, not blamed on small
    assert sink.outcomes == ["dead_lettered", "dropped"]
