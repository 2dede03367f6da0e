"""Delivery edges for alert events that do not go through Kafka: HTTP webhooks and the log.

A :class:`WebhookSink` never blocks the caller: :meth:`~WebhookSink.submit` puts the event on a bounded queue
(a full queue is a give-up at once), and one background thread POSTs each event as JSON with urllib3 (a pooled
connection, a connect and a read timeout) and urllib3's retry machinery: exponential backoff with jitter, the
endpoint's ``Retry-After`` honoured (up to ``max_backoff_s``), retries on network and protocol errors (refused
connections, timeouts, truncated bodies, bad status lines), 5xx, 408 and 429; other 4xx are not retried.
Give-ups become :class:`DeadLetter` records that the alert stage collects on its next tick and produces to the
dead-letter topic. The delivery thread survives any exception: the event in flight is then dead-lettered with it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import HTTPError, MaxRetryError
from urllib3.util.retry import Retry

from aestream.alerts.routing import LogSpec, WebhookSpec

__all__ = ["DeadLetter", "Delivery", "Post", "WebhookSink", "log_event", "post_json"]

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429, *range(500, 600)})


@dataclass(frozen=True)
class Delivery:
    """What one delivery came to, its retries included: the last HTTP status (0 when none came back, ``error``
    then says why) and the attempts made."""

    status: int
    attempts: int
    error: str = ""


# POST ``body`` to ``spec.url`` with ``headers``, retrying as ``spec`` says; a set ``stop`` ends the waits.
Post = Callable[[WebhookSpec, bytes, Mapping[str, str], threading.Event], Delivery]


@dataclass(frozen=True)
class DeadLetter:
    """An event a sink gave up on, with why and after how many attempts."""

    sink: str
    key: bytes | None
    value: bytes
    reason: str
    attempts: int
    event_id: str = ""


class _Stopped(Exception):
    """The worker stopped while a delivery waited to retry; ``args[0]``: the attempts made."""


class _Retry(Retry):
    """urllib3's :class:`Retry` whose waits end when the sink stops, and whose ``Retry-After`` is capped at
    ``cap_s`` (one delivery thread per endpoint: an hour's wait would hold every later alert)."""

    stop: threading.Event | None = None
    cap_s: float = 30.0
    # urllib3 also retries 413 (and the others) when they carry Retry-After: only RETRY_STATUSES are retried
    RETRY_AFTER_STATUS_CODES = frozenset()

    def new(self, **kw: Any) -> _Retry:
        r = super().new(**kw)
        r.stop, r.cap_s = self.stop, self.cap_s
        return r

    def sleep_for_retry(self, response: Any) -> bool:
        retry_after = self.get_retry_after(response)
        if retry_after is None:
            return False
        self._wait(min(retry_after, self.cap_s))
        return True

    def _sleep_backoff(self) -> None:
        self._wait(self.get_backoff_time())

    def _wait(self, seconds: float) -> None:
        if self.stop is not None and (self.stop.is_set() or (seconds > 0 and self.stop.wait(seconds))):
            raise _Stopped(len(self.history))  # before any retry, a first one without backoff included


_POOL = urllib3.PoolManager(num_pools=16, maxsize=1)  # one connection per endpoint: one thread posts to it


def post_json(spec: WebhookSpec, body: bytes, headers: Mapping[str, str],
              stop: threading.Event | None = None) -> Delivery:
    """POST ``body`` as JSON to ``spec.url``, retrying as ``spec`` says (``retries`` more attempts, backoff
    ``backoff_s`` × 2ⁿ plus up to ``backoff_s`` of jitter, at most ``max_backoff_s``); never raises for the
    endpoint's sake: an error status is returned, a failure to get one is the ``error``."""
    retry = _Retry(total=spec.retries, allowed_methods=None, status_forcelist=RETRY_STATUSES,
                   backoff_factor=spec.backoff_s, backoff_max=spec.max_backoff_s, backoff_jitter=spec.backoff_s,
                   respect_retry_after_header=True, raise_on_status=False, redirect=False)
    retry.stop, retry.cap_s = stop, spec.max_backoff_s
    try:
        resp = _POOL.request("POST", spec.url, body=body, retries=retry,
                             timeout=urllib3.Timeout(connect=spec.timeout_s, read=spec.timeout_s),
                             headers={"Content-Type": "application/json", "User-Agent": "aestream-alerts/1",
                                      **headers})
    except MaxRetryError as e:
        return Delivery(0, 1 + spec.retries, _why(e.reason))
    except _Stopped as e:
        return Delivery(0, int(e.args[0]) if e.args else 0, "worker stopped while retrying")
    except HTTPError as e:  # a protocol error on a request that was not to be retried
        return Delivery(0, 1, _why(e))
    history = resp.retries.history if isinstance(resp.retries, Retry) else ()
    return Delivery(resp.status, len(history) + 1)


def _why(e: BaseException | None) -> str:
    """A reason for a dead letter: the error urllib3 gave up on (a protocol error names the one it wraps)."""
    text = f"{type(e).__name__}: {e}" if e is not None else "no response"
    return text if len(text) <= 300 else text[:297] + "..."


def _where(url: str) -> str:
    """The URL without credentials, path or query, for logs: ``http://host:port``."""
    u = urlsplit(url)
    try:
        port = u.port
    except ValueError:  # refused at start (alerts.routing): a sink built another way still logs its give-ups
        port = None
    return f"{u.scheme}://{u.hostname}{f':{port}' if port else ''}"


class WebhookSink:
    """One webhook endpoint, one delivery thread, one bounded queue."""

    def __init__(self, name: str, spec: WebhookSpec, post: Post = post_json) -> None:
        self.name, self.spec, self._post = name, spec, post
        self._queue: queue.Queue[tuple[bytes | None, bytes, str]] = queue.Queue(spec.queue_size)
        self._dead: list[DeadLetter] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._in_flight: tuple[bytes | None, bytes, str] | None = None  # the event the thread is delivering
        self.delivered = 0
        self.attempts = 0
        self._thread = threading.Thread(target=self._run, name=f"aestream-webhook-{name}", daemon=True)
        self._thread.start()

    def submit(self, value: bytes, key: bytes | None = None, event_id: str = "") -> None:
        """Queue one event for delivery; never blocks."""
        try:
            self._queue.put_nowait((key, value, event_id))
        except queue.Full:
            self._give_up(key, value, event_id, f"webhook queue full ({self.spec.queue_size} waiting)", 0)

    @property
    def pending(self) -> int:
        """Events queued or being delivered."""
        return self._queue.unfinished_tasks

    def take_dead_letters(self) -> list[DeadLetter]:
        with self._lock:
            out, self._dead = self._dead, []
        return out

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop after the delivery in flight; what is still queued becomes dead letters, and so does the delivery
        in flight when it is not over within ``timeout_s`` (should it still arrive, the event id is in its
        ``Idempotency-Key``)."""
        self._stop.set()
        self._thread.join(timeout_s)
        with self._lock:
            late = self._in_flight if self._thread.is_alive() else None
        if late is not None:
            self._give_up(*late, f"worker stopped during its delivery (not over within {timeout_s:g} s)", 0)
        while True:
            try:
                key, value, eid = self._queue.get_nowait()
            except queue.Empty:
                break
            self._give_up(key, value, eid, "worker stopped before delivery", 0)
            self._queue.task_done()

    def _give_up(self, key: bytes | None, value: bytes, event_id: str, reason: str, attempts: int) -> None:
        log.warning("alert sink %s (%s) gave up on event %s after %d attempt(s): %s",
                    self.name, _where(self.spec.url), event_id or "?", attempts, reason)
        with self._lock:
            self._dead.append(DeadLetter(self.name, key, value, reason, attempts, event_id))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                key, value, eid = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            with self._lock:
                self._in_flight = (key, value, eid)
            try:
                self._deliver(key, value, eid)
            except Exception as e:  # the thread outlives any failure; the event is dead-lettered with it
                # its text may quote a request header (a secret): the traceback only at DEBUG, the type in the reason
                log.debug("alert sink %s: delivery of event %s failed", self.name, eid or "?", exc_info=True)
                self._give_up(key, value, eid, f"{type(e).__name__} raised before a response (details at DEBUG)", 0)
            finally:
                with self._lock:
                    self._in_flight = None
                self._queue.task_done()

    def _deliver(self, key: bytes | None, value: bytes, event_id: str) -> None:
        s = self.spec
        headers = {**s.headers, "Idempotency-Key": event_id} if event_id else dict(s.headers)
        d = self._post(s, value, headers, self._stop)
        self.attempts += d.attempts
        if 200 <= d.status < 300:
            self.delivered += 1
            return
        if d.status == 0:
            reason = f"{d.error} after {d.attempts} attempt(s)" if d.attempts else d.error
        elif d.status in RETRY_STATUSES:
            reason = f"HTTP {d.status} after {d.attempts} attempt(s)"
        else:
            reason = f"HTTP {d.status} (not retried)"
        self._give_up(key, value, event_id, reason, d.attempts)


def log_event(spec: LogSpec, event: Mapping[str, Any]) -> None:
    """The log sink: one line per event."""
    level = logging.getLevelName(spec.level.upper())
    log.log(level if isinstance(level, int) else logging.WARNING, "alert %s sensor=%s severity=%s episode=%s id=%s",
            event.get("type"), event.get("sensor"), event.get("severity"), event.get("episode_id", "-"),
            event.get("event_id"))
