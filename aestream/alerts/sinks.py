"""Delivery edges for alert events that do not go through Kafka: HTTP webhooks and the log.

A :class:`WebhookSink` never blocks the caller: :meth:`~WebhookSink.submit` puts the event on a bounded queue
(a full queue is a give-up at once), and one background thread POSTs each event as JSON with a timeout,
retrying with exponential backoff (5xx, 408, 429 and network errors; other 4xx are not retried). Give-ups
become :class:`DeadLetter` records that the alert stage collects on its next tick and produces to the
dead-letter topic. Stdlib only (``urllib``).
"""

from __future__ import annotations

import logging
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aestream.alerts.routing import LogSpec, WebhookSpec

__all__ = ["DeadLetter", "Post", "WebhookSink", "log_event", "post_json"]

log = logging.getLogger(__name__)

Post = Callable[[str, bytes, Mapping[str, str], float], int]
_RETRY_4XX = (408, 429)


@dataclass(frozen=True)
class DeadLetter:
    """An event a sink gave up on, with why and after how many attempts."""

    sink: str
    key: bytes | None
    value: bytes
    reason: str
    attempts: int
    event_id: str = ""


def post_json(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
    """POST ``body``; returns the HTTP status (an error status is returned, not raised)."""
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "aestream-alerts/1", **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # the URL is configuration
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as e:
        e.close()
        return int(e.code)


def _where(url: str) -> str:
    """The URL without credentials, path or query, for logs: ``http://host:port``."""
    u = urlsplit(url)
    return f"{u.scheme}://{u.hostname}{f':{u.port}' if u.port else ''}"


class WebhookSink:
    """One webhook endpoint, one delivery thread, one bounded queue."""

    def __init__(self, name: str, spec: WebhookSpec, post: Post = post_json) -> None:
        self.name, self.spec, self._post = name, spec, post
        self._queue: queue.Queue[tuple[bytes | None, bytes, str]] = queue.Queue(spec.queue_size)
        self._dead: list[DeadLetter] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
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
        """Stop after the delivery in flight; what is still queued becomes dead letters."""
        self._stop.set()
        self._thread.join(timeout_s)
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
            try:
                self._deliver(key, value, eid)
            finally:
                self._queue.task_done()

    def _deliver(self, key: bytes | None, value: bytes, event_id: str) -> None:
        s = self.spec
        headers = {**s.headers, "Idempotency-Key": event_id} if event_id else dict(s.headers)
        reason = ""
        for attempt in range(1 + s.retries):
            if attempt:
                delay = min(s.backoff_s * 2 ** (attempt - 1), s.max_backoff_s)
                if self._stop.wait(delay):
                    self._give_up(key, value, event_id, f"worker stopped while retrying ({reason})", attempt)
                    return
            self.attempts += 1
            try:
                status = self._post(s.url, value, headers, s.timeout_s)
            except (OSError, ValueError) as e:  # URLError, timeouts, refused connections are OSErrors
                reason = f"{type(e).__name__}: {e}"
                continue
            if 200 <= status < 300:
                self.delivered += 1
                return
            reason = f"HTTP {status}"
            if 400 <= status < 500 and status not in _RETRY_4XX:
                self._give_up(key, value, event_id, f"{reason} (not retried)", attempt + 1)
                return
        self._give_up(key, value, event_id, f"{reason} after {1 + s.retries} attempt(s)", 1 + s.retries)


def log_event(spec: LogSpec, event: Mapping[str, Any]) -> None:
    """The log sink: one line per event."""
    level = logging.getLevelName(spec.level.upper())
    log.log(level if isinstance(level, int) else logging.WARNING, "alert %s sensor=%s severity=%s episode=%s id=%s",
            event.get("type"), event.get("sensor"), event.get("severity"), event.get("episode_id", "-"),
            event.get("event_id"))
