"""Webhook delivery on its own thread: give-ups with their reasons, a thread that survives any exception, a bounded
queue. No sockets: the POST (urllib3 with its retries, tested against a local endpoint in
tests/integration/test_webhook_peers.py) is injected."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import pytest

from aestream.alerts.routing import WebhookSpec
from aestream.alerts.sinks import Delivery, WebhookSink

SPEC = WebhookSpec(url="http://hooks.example:8080/alerts?token=s3cret", timeout_s=1.0, retries=2, backoff_s=0.0,
                   queue_size=4, headers={"X-Token": "s3cret"})


class FakePost:
    """Answers each delivery with the next outcome (the last one repeats); an exception is raised."""

    def __init__(self, outcomes: list[Delivery | Exception]) -> None:
        self.outcomes, self.calls = outcomes, []  # type: ignore[var-annotated]
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, spec: WebhookSpec, body: bytes, headers: Mapping[str, str],
                 stop: threading.Event) -> Delivery:
        self.calls.append((body, dict(headers), spec))
        self.gate.wait()
        d = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(d, Exception):
            raise d
        return d


def drain(sink: WebhookSink) -> None:
    deadline = time.monotonic() + 10
    while sink.pending and time.monotonic() < deadline:
        time.sleep(0.005)
    assert sink.pending == 0


def test_a_delivery_that_succeeds_after_retries_is_not_dead_lettered() -> None:
    post = FakePost([Delivery(204, 3)])
    sink = WebhookSink("pager", SPEC, post)
    sink.submit(b'{"a":1}', b"pump-1", "e1")
    drain(sink)
    sink.close()
    assert len(post.calls) == 1 and sink.delivered == 1 and sink.attempts == 3 and sink.take_dead_letters() == []
    assert post.calls[0][1] == {"X-Token": "s3cret", "Idempotency-Key": "e1"} and post.calls[0][2] is SPEC


@pytest.mark.parametrize(("outcome", "reason", "attempts"), [
    (Delivery(500, 3), "HTTP 500 after 3 attempt(s)", 3),
    (Delivery(404, 1), "HTTP 404 (not retried)", 1),
    (Delivery(0, 3, "ReadTimeoutError: read timed out"), "ReadTimeoutError: read timed out after 3 attempt(s)", 3),
    (Delivery(0, 0, "worker stopped while retrying"), "worker stopped while retrying", 0),
    (RuntimeError("boom"), "RuntimeError raised before a response (details at DEBUG)", 0),
])
def test_a_delivery_given_up_becomes_a_dead_letter_with_its_reason_and_the_thread_goes_on(
        outcome: Delivery | Exception, reason: str, attempts: int, caplog: pytest.LogCaptureFixture) -> None:
    post = FakePost([outcome, Delivery(204, 1)])
    sink = WebhookSink("pager", SPEC, post)
    sink.submit(b'{"a":1}', b"pump-1", "e1")
    drain(sink)
    sink.submit(b'{"a":2}', b"pump-1", "e2")  # the thread is alive: this one is delivered
    drain(sink)
    sink.close()
    (dead,) = sink.take_dead_letters()
    assert (dead.sink, dead.key, dead.value, dead.event_id) == ("pager", b"pump-1", b'{"a":1}', "e1")
    assert (dead.reason, dead.attempts) == (reason, attempts) and sink.delivered == 1
    assert f"alert sink pager (http://hooks.example:8080) gave up on event e1 after {attempts} attempt(s)" \
        in caplog.text
    assert "s3cret" not in caplog.text


def test_submit_never_waits_on_a_hanging_endpoint_and_overflow_is_dead_lettered_at_once() -> None:
    post = FakePost([Delivery(204, 1)])
    post.gate.clear()  # the endpoint hangs
    sink = WebhookSink("pager", SPEC, post)
    for i in range(10):
        sink.submit(b"{}", None, f"e{i}")  # returns although nothing is delivered
    assert sink.pending <= SPEC.queue_size + 1
    overflow = sink.take_dead_letters()
    assert len(overflow) >= 10 - SPEC.queue_size - 1
    assert all(d.reason == "webhook queue full (4 waiting)" and d.attempts == 0 for d in overflow)
    post.gate.set()
    drain(sink)
    sink.close()
    assert sink.delivered + len(overflow) == 10


def test_close_dead_letters_what_is_still_queued() -> None:
    post = FakePost([Delivery(204, 1)])
    post.gate.clear()
    sink = WebhookSink("pager", SPEC, post)
    for i in range(3):
        sink.submit(b"{}", None, f"e{i}")
    threading.Timer(0.2, post.gate.set).start()
    sink.close(timeout_s=5)
    dead = sink.take_dead_letters()
    assert sink.delivered + len(dead) == 3 and len(dead) >= 1
    assert {d.reason for d in dead} == {"worker stopped before delivery"}
