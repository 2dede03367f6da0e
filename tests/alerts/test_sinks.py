"""Webhook delivery on its own thread: retries with backoff, give-ups, a bounded queue. No sockets: the POST is
injected."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import pytest

from aestream.alerts.routing import WebhookSpec
from aestream.alerts.sinks import WebhookSink

SPEC = WebhookSpec(url="http://hooks.example:8080/alerts?token=s3cret", timeout_s=1.0, retries=2, backoff_s=0.0,
                   queue_size=4, headers={"X-Token": "s3cret"})


class FakePost:
    def __init__(self, statuses: list[int | Exception]) -> None:
        self.statuses, self.calls = statuses, []  # type: ignore[var-annotated]
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
        self.calls.append((body, dict(headers), timeout_s))
        self.gate.wait()
        s = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if isinstance(s, Exception):
            raise s
        return s


def drain(sink: WebhookSink) -> None:
    deadline = time.monotonic() + 10
    while sink.pending and time.monotonic() < deadline:
        time.sleep(0.005)
    assert sink.pending == 0


def test_a_delivery_that_succeeds_after_errors_is_not_dead_lettered() -> None:
    post = FakePost([500, TimeoutError("timed out"), 204])
    sink = WebhookSink("pager", SPEC, post)
    sink.submit(b'{"a":1}', b"pump-1", "e1")
    drain(sink)
    sink.close()
    assert len(post.calls) == 3 and sink.delivered == 1 and sink.take_dead_letters() == []
    assert post.calls[0][1] == {"X-Token": "s3cret", "Idempotency-Key": "e1"} and post.calls[0][2] == 1.0


def test_a_delivery_failing_every_retry_becomes_a_dead_letter_with_its_reason(
        caplog: pytest.LogCaptureFixture) -> None:
    post = FakePost([500])
    sink = WebhookSink("pager", SPEC, post)
    sink.submit(b'{"a":1}', b"pump-1", "e1")
    drain(sink)
    sink.close()
    (dead,) = sink.take_dead_letters()
    assert len(post.calls) == 3
    assert (dead.sink, dead.key, dead.value, dead.attempts, dead.event_id) == ("pager", b"pump-1", b'{"a":1}', 3, "e1")
    assert dead.reason == "HTTP 500 after 3 attempt(s)"
    assert "alert sink pager (http://hooks.example:8080) gave up on event e1 after 3 attempt(s)" in caplog.text
    assert "s3cret" not in caplog.text


def test_a_client_error_is_not_retried() -> None:
    post = FakePost([404])
    sink = WebhookSink("pager", SPEC, post)
    sink.submit(b"{}", None, "e1")
    drain(sink)
    sink.close()
    (dead,) = sink.take_dead_letters()
    assert len(post.calls) == 1 and dead.reason == "HTTP 404 (not retried)" and dead.attempts == 1


def test_submit_never_waits_on_a_hanging_endpoint_and_overflow_is_dead_lettered_at_once() -> None:
    post = FakePost([204])
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
    post = FakePost([204])
    post.gate.clear()
    sink = WebhookSink("pager", SPEC, post)
    for i in range(3):
        sink.submit(b"{}", None, f"e{i}")
    threading.Timer(0.2, post.gate.set).start()
    sink.close(timeout_s=5)
    dead = sink.take_dead_letters()
    assert sink.delivered + len(dead) == 3 and len(dead) >= 1
    assert {d.reason for d in dead} == {"worker stopped before delivery"}
