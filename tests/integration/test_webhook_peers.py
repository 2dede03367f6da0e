"""The webhook sink against a local HTTP endpoint that misbehaves: truncated bodies, bad status lines, 503 with
Retry-After, a hang. The delivery thread survives each; an event is delivered or dead-lettered, never lost.
(Opens sockets on 127.0.0.1; no broker.)"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from aestream.alerts.routing import WebhookSpec
from aestream.alerts.sinks import WebhookSink

pytestmark = pytest.mark.integration

OK = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
TRUNCATED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ok\":"
BAD_STATUS = b"HTTP/1.1 2xx SURE\r\n\r\n"
RETRY_LATER = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
RETRY_IN_AN_HOUR = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3600\r\nContent-Length: 0\r\n\r\n"
HANG = b""  # read the request, answer nothing until the server stops


class Endpoint(socketserver.ThreadingTCPServer):
    """Answers each POST with the next scripted raw response (then ``OK`` forever) and closes the connection;
    remembers when each request came and its body."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, script: list[bytes]) -> None:
        self.script, self.arrivals, self.bodies = list(script), [], []  # type: ignore[var-annotated]
        self.stopping = threading.Event()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(socketserver.StreamRequestHandler):
    server: Endpoint

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            head += chunk
        length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length")), b"0"))
        body = head.split(b"\r\n\r\n", 1)[1]
        while len(body) < length:
            body += self.request.recv(65536)
        self.server.arrivals.append(time.monotonic())
        self.server.bodies.append(body)
        answer = self.server.script.pop(0) if self.server.script else OK
        if answer == HANG:
            self.server.stopping.wait(30)
            return
        self.request.sendall(answer)
        self.request.shutdown(socket.SHUT_WR)


@pytest.fixture()
def endpoint() -> Iterator[type[Endpoint]]:
    started: list[Endpoint] = []

    def start(script: list[bytes]) -> Endpoint:
        server = Endpoint(script)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server

    yield start  # type: ignore[misc]
    for s in started:
        s.stopping.set()
        s.shutdown()
        s.server_close()


def _spec(url: str, **kw: float) -> WebhookSpec:
    return WebhookSpec(url=url, **{"timeout_s": 2.0, "retries": 3, "backoff_s": 0.01, "max_backoff_s": 2.0, **kw})


def _drain(sink: WebhookSink, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while sink.pending and time.monotonic() < deadline:
        time.sleep(0.01)


def _deliver(sink: WebhookSink, n: int) -> None:
    for i in range(n):
        sink.submit(f'{{"n": {i}}}'.encode(), b"pump-1", f"e{i}")
        _drain(sink)


def test_truncated_bodies_are_retried_and_the_thread_survives_them(endpoint: type[Endpoint]) -> None:
    server = endpoint([TRUNCATED, TRUNCATED])
    sink = WebhookSink("hook", _spec(server.url))
    _deliver(sink, 2)
    sink.close()
    assert sink.take_dead_letters() == [] and sink.delivered == 2
    assert server.bodies == [b'{"n": 0}'] * 3 + [b'{"n": 1}']


def test_a_bad_status_line_every_time_is_dead_lettered_with_its_reason_and_the_next_event_goes_through(
        endpoint: type[Endpoint]) -> None:
    server = endpoint([BAD_STATUS] * 4)
    sink = WebhookSink("hook", _spec(server.url))
    _deliver(sink, 2)
    sink.close()
    (dead,) = sink.take_dead_letters()
    assert (dead.value, dead.event_id, dead.attempts) == (b'{"n": 0}', "e0", 4)
    assert "BadStatusLine" in dead.reason or "bad status" in dead.reason.lower(), dead.reason
    assert sink.delivered == 1 and server.bodies[-1] == b'{"n": 1}'


def test_503_with_retry_after_waits_as_asked(endpoint: type[Endpoint]) -> None:
    server = endpoint([RETRY_LATER])
    sink = WebhookSink("hook", _spec(server.url))
    _deliver(sink, 1)
    sink.close()
    assert sink.delivered == 1 and sink.take_dead_letters() == []
    assert len(server.arrivals) == 2 and server.arrivals[1] - server.arrivals[0] >= 0.95  # Retry-After: 1


def test_a_retry_after_beyond_max_backoff_waits_max_backoff_only(endpoint: type[Endpoint]) -> None:
    server = endpoint([RETRY_IN_AN_HOUR])
    sink = WebhookSink("hook", _spec(server.url, max_backoff_s=0.5))  # one thread per endpoint: never an hour
    _deliver(sink, 1)
    sink.close()
    assert sink.delivered == 1 and 0.45 <= server.arrivals[1] - server.arrivals[0] < 30


def test_close_ends_a_wait_for_retry_and_dead_letters_the_event(endpoint: type[Endpoint]) -> None:
    server = endpoint([RETRY_IN_AN_HOUR])
    sink = WebhookSink("hook", _spec(server.url, max_backoff_s=600.0))
    sink.submit(b"{}", b"pump-1", "e0")
    deadline = time.monotonic() + 10
    while not server.arrivals and time.monotonic() < deadline:
        time.sleep(0.01)
    sink.close(timeout_s=10)
    (dead,) = sink.take_dead_letters()
    assert dead.reason == "worker stopped while retrying after 1 attempt(s)" and dead.attempts == 1
    assert not sink._thread.is_alive()


def test_a_hanging_endpoint_times_out_and_is_dead_lettered_then_the_thread_goes_on(
        endpoint: type[Endpoint]) -> None:
    server = endpoint([HANG, HANG])
    sink = WebhookSink("hook", _spec(server.url, timeout_s=0.3, retries=1))
    _deliver(sink, 2)
    sink.close()
    (dead,) = sink.take_dead_letters()
    assert dead.event_id == "e0" and dead.attempts == 2 and "timed out" in dead.reason.lower(), dead.reason
    assert sink.delivered == 1 and server.bodies == [b'{"n": 0}'] * 2 + [b'{"n": 1}']


TOO_LARGE_RETRY_LATER = b"HTTP/1.1 413 Payload Too Large\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"


def test_a_413_with_retry_after_is_not_retried(endpoint: type[Endpoint]) -> None:
    server = endpoint([TOO_LARGE_RETRY_LATER])
    sink = WebhookSink("hook", _spec(server.url, max_backoff_s=1.0))
    _deliver(sink, 1)
    sink.close()
    (dead,) = sink.take_dead_letters()
    assert (len(server.arrivals), dead.reason, dead.attempts) == (1, "HTTP 413 (not retried)", 1)


def test_a_delivery_still_in_flight_when_the_worker_stops_is_dead_lettered(endpoint: type[Endpoint]) -> None:
    server = endpoint([HANG])  # the endpoint takes longer to answer than the stop waits
    sink = WebhookSink("hook", _spec(server.url, timeout_s=3.0, retries=1, backoff_s=0.0))
    sink.submit(b"{}", b"pump-1", "in-flight")
    sink.submit(b"{}", b"pump-1", "queued")
    deadline = time.monotonic() + 10
    while not server.arrivals and time.monotonic() < deadline:
        time.sleep(0.01)
    sink.close(timeout_s=0.5)
    dead = {d.event_id: d.reason for d in sink.take_dead_letters()}
    assert dead == {"in-flight": "worker stopped during its delivery (not over within 0.5 s)",
                    "queued": "worker stopped before delivery"}
    time.sleep(3.5)  # its read times out: the retry is not made once the sink stopped
    assert len(server.arrivals) == 1
