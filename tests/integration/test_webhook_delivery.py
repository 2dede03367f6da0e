"""A webhook sink against a real HTTP endpoint on this host (no broker): what is retried, and what a stop
does to the delivery in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from aestream.alerts.routing import WebhookSpec
from aestream.alerts.sinks import WebhookSink

pytestmark = pytest.mark.integration


class _Endpoint:
    """Answers every POST with ``status`` (and ``Retry-After: 1``), or hangs while ``hang`` is set."""

    def __init__(self) -> None:
        self.status, self.hits, self.hang = 204, 0, threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                endpoint.hits += 1
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                while endpoint.hang.is_set() and not endpoint.closing:
                    time.sleep(0.05)
                self.send_response(endpoint.status)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.closing = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture()
def endpoint() -> Iterator[_Endpoint]:
    e = _Endpoint()
    yield e
    e.closing = True
    e.server.shutdown()
    e.server.server_close()


def _wait(cond: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.02)


def test_a_413_with_retry_after_is_not_retried(endpoint: _Endpoint) -> None:
    endpoint.status = 413
    sink = WebhookSink("hook", WebhookSpec(url=endpoint.url, retries=3, backoff_s=0.01, max_backoff_s=1.0))
    sink.submit(b"{}", b"pump-1", "e1")
    _wait(lambda: sink.pending == 0)
    sink.close()
    (dead,) = sink.take_dead_letters()
    assert (endpoint.hits, dead.reason, dead.attempts) == (1, "HTTP 413 (not retried)", 1)


def test_a_delivery_still_in_flight_when_the_worker_stops_is_dead_lettered(endpoint: _Endpoint) -> None:
    endpoint.hang.set()  # the endpoint takes longer to answer than the stop waits
    sink = WebhookSink("hook", WebhookSpec(url=endpoint.url, timeout_s=3.0, retries=1, backoff_s=0.0))
    sink.submit(b"{}", b"pump-1", "in-flight")
    sink.submit(b"{}", b"pump-1", "queued")
    _wait(lambda: endpoint.hits >= 1)
    sink.close(timeout_s=0.5)
    dead = {d.event_id: d.reason for d in sink.take_dead_letters()}
    assert dead == {"in-flight": "worker stopped during its delivery (not over within 0.5 s)",
                    "queued": "worker stopped before delivery"}
    time.sleep(3.5)  # its read times out: the retry is not made once the sink stopped
    assert endpoint.hits == 1
