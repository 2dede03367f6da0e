"""The operations endpoint: a small threaded HTTP server for Prometheus and the orchestrator's probes.

* ``GET /metrics``: the worker's metrics in the Prometheus text format;
* ``GET /healthz``: liveness: 200 while the worker's loop completes steps, 503 once it has not for the liveness
  timeout (a hung loop; the orchestrator restarts the process); without a liveness check, 200 while the process
  serves HTTP;
* ``GET /readyz``: 200 when every readiness check is true, else 503; the JSON body lists the checks.

The readiness checks are injected (the composition root knows the worker); :func:`broker_check` is the
default broker check, a plain TCP connect to the bootstrap servers (no Kafka client, so it never blocks the
consumer and costs one handshake).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.exposition import choose_encoder

from aestream.errors import ConfigError
from aestream.ops.metrics import RetrainMetrics

__all__ = ["OpsServer", "broker_check", "split_host_port", "tcp_reachable"]

log = logging.getLogger(__name__)

Readiness = Callable[[], dict[str, bool]]
Liveness = Callable[[], dict[str, Any]]  # {"alive": bool, ...details}
DEFAULT_HOST = "0.0.0.0"


def split_host_port(server: str) -> tuple[str, int]:
    """``"kafka:9092"`` → ``("kafka", 9092)``; IPv6 hosts go in brackets.

    >>> split_host_port("kafka:9092"), split_host_port("[::1]:9092")
    (('kafka', 9092), ('::1', 9092))
    """
    host, sep, port = server.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"bootstrap server {server!r} is not host:port: write it like \"kafka:9092\"")
    return host.strip("[]"), int(port)


def tcp_reachable(servers: Sequence[str], timeout_s: float = 1.0) -> bool:
    """Whether any of ``servers`` (``host:port``) accepts a TCP connection within ``timeout_s``."""
    for server in servers:
        try:
            with socket.create_connection(split_host_port(server), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


def broker_check(servers: Sequence[str], timeout_s: float = 1.0) -> Callable[[], bool]:
    """A ``broker_ok()`` callable for :class:`OpsServer` readiness: :func:`tcp_reachable` on ``servers``."""
    servers = tuple(servers)
    return lambda: tcp_reachable(servers, timeout_s)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            # the text format, or OpenMetrics when the scraper asks for it (as Prometheus does)
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(HTTPStatus.OK, encoder(self.server.metrics.registry), content_type)
        elif path == "/healthz":
            self._alive()
        elif path == "/readyz":
            self._ready()
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path {path}: use /metrics, /healthz or /readyz"})

    def _alive(self) -> None:
        check = getattr(self.server, "liveness", None)
        if check is None:
            self._json(HTTPStatus.OK, {"status": "ok"})
            return
        details = dict(check())
        alive = bool(details.pop("alive"))
        status = HTTPStatus.OK if alive else HTTPStatus.SERVICE_UNAVAILABLE
        self._json(status, {"status": "ok" if alive else "stalled", **details})

    def _ready(self) -> None:
        try:
            checks = {k: bool(v) for k, v in self.server.readiness().items()}
        except Exception as e:  # a failing check means "not ready", never a crashed handler
            log.warning("readiness check failed: %s", e)
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"ready": False, "error": str(e), "checks": {}})
            return
        ready = all(checks.values())
        status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
        self._json(status, {"ready": ready, "checks": checks})

    def _json(self, status: HTTPStatus, doc: dict[str, object]) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], metrics: RetrainMetrics, readiness: Readiness,
                 liveness: Liveness | None = None) -> None:
        self.metrics = metrics
        self.readiness = readiness
        self.liveness = liveness
        self.address_family = _family(address[0])
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        _dual_stack(self.socket)
        super().server_bind()


def _family(host: str) -> socket.AddressFamily:
    """IPv6 for an IPv6 address (``"::"``, ``"::1"``; an IPv6-only cluster's probes), else IPv4."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _dual_stack(sock: socket.socket) -> None:
    """An IPv6 socket on ``"::"`` takes IPv4 connections too, where the system allows it."""
    if sock.family == socket.AF_INET6:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)


def check_port(host: str, port: int, key: str = "ops.metrics_port") -> None:
    """Fail now, with the setting and its fix, when ``host:port`` cannot be bound: before a start's slow part (the
    Kafka clients' bootstrap, up to 30 s with the broker away), not after it. The port is let go at once."""
    if port == 0:
        return
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds (allow_reuse_address)
        _dual_stack(probe)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise _unbound(e, key, host, port) from None


def _unbound(e: OSError, key: str, host: str, port: int) -> ConfigError:
    if e.errno == errno.EADDRINUSE:  # another worker or trainer on this host
        return ConfigError(f"config key {key} = {port} cannot be served on {host or '*'}: {e.strerror} (another "
                           f"aestream on this host?): set {key} to a free port, or 0 for any free port")
    return ConfigError(f"config key ops.metrics_host = {host!r} cannot be served on: {e.strerror or e}: set it to "
                       'an address of this machine, or "0.0.0.0" for all of them ("::" for IPv6 too)')


class OpsServer:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` from a daemon thread.

    ``port = 0`` picks a free port; :attr:`port` is the bound one once :meth:`start` returned. ``key`` is the
    config key that names the port: a port that cannot be bound fails the start with it.
    """

    def __init__(self, port: int, metrics: RetrainMetrics, readiness: Readiness, host: str = DEFAULT_HOST,
                 liveness: Liveness | None = None, key: str = "ops.metrics_port") -> None:
        self.key = key
        self.host = host
        self.port = port
        self.metrics = metrics
        self.readiness = readiness
        self.liveness = liveness
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> OpsServer:
        """Bind and serve in the background; returns ``self``."""
        if self._server is not None:
            return self
        try:
            self._server = _Server((self.host, self.port), self.metrics, self.readiness, self.liveness)
        except OSError as e:
            raise _unbound(e, self.key, self.host, self.port) from None
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="aestream-ops", daemon=True)
        self._thread.start()
        log.info("metrics and health endpoints on http://%s:%d (/metrics /healthz /readyz)",
                 f"[{self.host}]" if ":" in self.host else self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)
        self._server = self._thread = None

    @property
    def url(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def __enter__(self) -> OpsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
