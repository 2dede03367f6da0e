"""Logging set-up for the CLI: plain lines or one JSON object per line, and the same form in the processes it starts."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["LOG_JSON_ENV", "configure_child_logging", "configure_logging"]

LOG_JSON_ENV = "AESTREAM_LOG_JSON"
"""Set by :func:`configure_logging` ("1" for JSON lines), so that the processes a command starts (the fetch
process) write their lines in its form: a log shipper reading ``--log-json`` output gets no plain line among them."""


class _JsonFormatter(logging.Formatter):
    def __init__(self, process: str = "") -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
               "logger": record.name, "msg": record.getMessage()}
        if self.process:
            doc["process"] = self.process
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def configure_logging(level: str = "INFO", json_lines: bool = False) -> None:
    """Send aestream's logs to stderr at ``level``; the Kafka clients' own chatter is held at WARNING (less its I/O
    thread's slow-step warning, :func:`_slow_task`, and kafka-python's repeats, :class:`_Repeats`). The processes
    started from now on log in the same form (:data:`LOG_JSON_ENV`)."""
    os.environ[LOG_JSON_ENV] = "1" if json_lines else "0"
    _install(level, _JsonFormatter() if json_lines else
             logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))


def configure_child_logging(process: str, level: str = "WARNING") -> None:
    """The logging of a child process named ``process`` (``"fetch"``: "aestream fetch process" in plain lines): in
    its parent's form, one JSON object per line when :data:`LOG_JSON_ENV` says so."""
    _install(level, _JsonFormatter(process) if os.environ.get(LOG_JSON_ENV) == "1" else
             logging.Formatter(f"%(asctime)s %(levelname)s aestream {process} process: %(message)s"))


def _slow_task(record: logging.LogRecord) -> bool:
    """False for kafka-python's "Task ... ran for 0.2s ... It is blocking the event loop" warning: its I/O thread
    times its own steps, and the worker's thread holding the GIL while it scores makes them look slow (nothing
    times out; the worker's own metrics say when its loop is slow). Kept when kafka-python logs at DEBUG."""
    return not (str(record.msg).startswith("Task ") and "blocking the event loop" in str(record.msg)
                and not logging.getLogger("kafka").isEnabledFor(logging.DEBUG))


class _Repeats(logging.Filter):
    """Holds back a line of kafka-python's that repeats its logger's and message's form within ``window_s`` of the
    last one shown, and says how many it held back with the next one shown. A broker that refuses connections
    makes its I/O thread log 3-4 lines at every reconnect, about one a second (~100 lines before a start gives up,
    thousands in an outage); held back so, each kind is one line a minute. aestream's own lines all pass."""

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s, self.clock = window_s, clock
        self._shown: dict[tuple[str, str], tuple[float, int]] = {}  # form → (last shown at, held back since)
        self._lock = threading.Lock()  # the client's I/O thread and the worker's both log

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "kafka" and not record.name.startswith("kafka."):
            return True
        key, now = (record.name, str(record.msg)), self.clock()
        with self._lock:
            shown, held = self._shown.get(key, (-float("inf"), 0))
            if now - shown < self.window_s:
                self._shown[key] = (shown, held + 1)
                return False
            if len(self._shown) >= 1000:  # forms with their values inside (f-strings): keep the recent ones
                self._shown = {k: v for k, v in self._shown.items() if now - v[0] < self.window_s}
            self._shown[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} (and {held} more like it since the last one shown)"
        return True


def _install(level: str, formatter: logging.Formatter) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(_slow_task)
    handler.addFilter(_Repeats())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for client in ("kafka", "librdkafka"):  # kafka-python's, and confluent-kafka's (aestream.kafka.confluent)
        logging.getLogger(client).setLevel(max(logging.WARNING, root.level))
    # urllib3 (the webhooks) warns of each retry with the request's path and query, where a chat webhook's URL
    # carries its secret; the sink logs its own give-ups without them
    logging.getLogger("urllib3.connectionpool").setLevel(max(logging.ERROR, root.level))
