"""The ops endpoint's handler, driven in memory (no sockets): /healthz, /readyz 200/503, /metrics, 404; the
TCP broker check with a stubbed connect; and a port already taken on the loopback."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Callable
from typing import Any

import pytest

from aestream.errors import ConfigError
from aestream.ops import server as ops
from aestream.ops.instrument import WorkerMetrics, liveness_check
from aestream.ops.metrics import Metrics
from aestream.worker import StepStats


class _Conn:
    """Enough of a socket for BaseHTTPRequestHandler: reads the request, collects what is sent."""

    def __init__(self, request: bytes) -> None:
        self._in = io.BytesIO(request)
        self.sent = bytearray()

    def makefile(self, mode: str, *args: Any, **kwargs: Any) -> io.BytesIO:
        return self._in

    def sendall(self, data: bytes) -> None:
        self.sent += data


class _FakeServer:
    def __init__(self, metrics: Metrics, readiness: Callable[[], dict[str, bool]],
                 liveness: Callable[[], dict[str, Any]] | None = None) -> None:
        self.metrics, self.readiness, self.liveness = metrics, readiness, liveness


class _NoLag:
    def lag(self) -> dict[tuple[str, int], int]:
        return {}

    def assignment(self) -> set[tuple[str, int]]:
        return set()


def _get(path: str, metrics: Metrics | None = None, readiness: Callable[[], dict[str, bool]] = lambda: {"a": True},
         accept: str = "", liveness: Callable[[], dict[str, Any]] | None = None) -> tuple[int, dict[str, str], bytes]:
    extra = f"Accept: {accept}\r\n" if accept else ""
    conn = _Conn(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
    server = _FakeServer(metrics or Metrics(), readiness, liveness)
    ops._Handler(conn, ("127.0.0.1", 1), server)  # type: ignore[arg-type]
    head, _, body = bytes(conn.sent).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_healthz_is_200_while_the_process_serves() -> None:
    status, headers, body = _get("/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert headers["Content-Type"] == "application/json"


def test_healthz_is_503_when_the_loop_has_not_completed_a_step_within_the_liveness_timeout() -> None:
    now = [100.0]
    observer = WorkerMetrics(Metrics(), _NoLag(), clock=lambda: now[0])  # created: counts as a step
    alive = liveness_check(observer.state, timeout_s=60.0, clock=lambda: now[0])
    now[0] = 150.0
    status, _, body = _get("/healthz", liveness=alive)
    assert (status, json.loads(body)) == (200, {"status": "ok", "seconds_since_step": 50.0, "timeout_s": 60.0})
    now[0] = 161.0  # the loop hangs: no step for 61 s
    status, _, body = _get("/healthz", liveness=alive)
    assert (status, json.loads(body)) == (503, {"status": "stalled", "seconds_since_step": 61.0, "timeout_s": 60.0})
    observer.on_step(StepStats(), 0.2)  # an empty poll is a step
    status, _, body = _get("/healthz", liveness=alive)
    assert status == 200 and json.loads(body)["seconds_since_step"] == 0.0


def test_a_liveness_timeout_of_0_never_fails() -> None:
    now = [0.0]
    observer = WorkerMetrics(Metrics(), _NoLag(), clock=lambda: now[0])
    now[0] = 1e6
    status, _, body = _get("/healthz", liveness=liveness_check(observer.state, 0.0, clock=lambda: now[0]))
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_readyz_is_200_when_every_check_passes_and_503_listing_the_checks_otherwise() -> None:
    checks = {"partitions_assigned": True, "model_loaded": True, "broker_reachable": True}
    status, _, body = _get("/readyz", readiness=lambda: dict(checks))
    assert status == 200 and json.loads(body) == {"ready": True, "checks": checks}
    checks["broker_reachable"] = False
    status, _, body = _get("/readyz", readiness=lambda: dict(checks))
    assert status == 503 and json.loads(body) == {"ready": False, "checks": checks}


def test_readyz_is_503_with_the_error_when_a_check_raises() -> None:
    def broken() -> dict[str, bool]:
        raise RuntimeError("consumer closed")

    status, _, body = _get("/readyz", readiness=broken)
    assert status == 503 and json.loads(body)["error"] == "consumer closed"


def test_metrics_serves_the_prometheus_text_format() -> None:
    m = Metrics()
    m.observe_step(StepStats(records=1, readings=7), 0.01)
    status, headers, body = _get("/metrics?x=1", metrics=m)
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE aestream_readings_total counter" in body.decode()
    assert "aestream_readings_total 7.0" in body.decode()


def test_metrics_speaks_openmetrics_when_the_scraper_asks() -> None:
    status, headers, body = _get("/metrics", accept="application/openmetrics-text; version=1.0.0")
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert "# TYPE aestream_model info" in body.decode() and body.decode().endswith("# EOF\n")


def test_an_unknown_path_is_404_naming_the_known_ones() -> None:
    status, _, body = _get("/nope")
    assert status == 404 and "use /metrics, /healthz or /readyz" in json.loads(body)["error"]


def test_broker_check_is_a_tcp_connect_to_any_bootstrap_server(monkeypatch: pytest.MonkeyPatch) -> None:
    tried: list[tuple[str, int]] = []
    up = {("kafka-2", 9092)}

    def connect(address: tuple[str, int], timeout: float) -> socket.socket:
        tried.append(address)
        if address not in up:
            raise ConnectionRefusedError(address)
        return socket.socket()  # never connected: closing it is all that happens

    monkeypatch.setattr(ops.socket, "create_connection", connect)
    check = ops.broker_check(["kafka-1:9092", "kafka-2:9092"], timeout_s=0.1)
    assert check() is True and tried == [("kafka-1", 9092), ("kafka-2", 9092)]
    up.clear()
    assert check() is False
    assert ops.tcp_reachable(["no-port"]) is False


def test_split_host_port_says_how_to_write_a_server() -> None:
    with pytest.raises(ValueError, match=r"'kafka' is not host:port: write it like \"kafka:9092\""):
        ops.split_host_port("kafka")


@pytest.mark.parametrize("key", ["ops.metrics_port", "ops.trainer_metrics_port"])
def test_a_port_in_use_fails_the_start_with_the_key_the_value_and_the_fix(key: str) -> None:
    """Two workers (or a worker and the trainer) on one host with the shipped port: the second says which key
    to change, not a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ops.OpsServer(port, Metrics(), lambda: {}, host="127.0.0.1", key=key)
        with pytest.raises(ConfigError, match=rf"^config key {key} = {port} cannot be served on 127\.0\.0\.1: "
                                              rf".*set {key} to a free port, or 0 for any free port$"):
            server.start()
    with ops.OpsServer(port, Metrics(), lambda: {}, host="127.0.0.1", key=key) as freed:  # the port, once free
        assert freed.port == port


def test_a_port_in_use_fails_the_start_before_any_kafka_client_waits_for_its_broker(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The clients' bootstrap waits up to 30 s when the broker is away, and then exits 1 (restarted forever):
    the port, a setting to fix (exit 2), is checked first."""
    import aestream.kafka.kafka_python as kafka_python
    from aestream.app import build_app, build_trainer
    from aestream.config import Config
    from aestream.kafka import normal_windows

    def opened(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a Kafka client was opened before the port was checked")

    monkeypatch.setattr(kafka_python, "open_source", opened)
    monkeypatch.setattr(normal_windows, "NormalWindowsFeed", opened)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        base = Config().replace(paths={"model_dir": str(tmp_path)}, model={"device": "cpu"},
                                fleet={"retrain_in": "trainer"})
        for key, build in (("ops.metrics_port", build_app), ("ops.trainer_metrics_port", build_trainer)):
            cfg = base.replace(ops={"metrics_host": "127.0.0.1", key.split(".")[1]: port})
            with pytest.raises(ConfigError, match=rf"^config key {key} = {port} cannot be served on 127\.0\.0\.1"):
                build(cfg)


def test_a_host_not_of_this_machine_fails_the_start_naming_the_host_key() -> None:
    server = ops.OpsServer(0, Metrics(), lambda: {}, host="192.0.2.1")  # TEST-NET-1: never a local address
    with pytest.raises(ConfigError, match=r"^config key ops.metrics_host = '192\.0\.2\.1' cannot be served on: .*"
                                          r"set it to an address of this machine, or \"0\.0\.0\.0\" for all of them "
                                          r"\(\"::\" for IPv6 too\)$"):
        server.start()


@pytest.mark.parametrize(("host", "reach"), [("::1", "::1"), ("::", "::1"), ("::", "127.0.0.1")])
def test_the_endpoints_listen_on_ipv6_and_on_both_from_the_any_address(host: str, reach: str) -> None:
    import urllib.request

    with socket.socket(socket.AF_INET6) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError:
            pytest.skip("this host has no IPv6 loopback")
        free = probe.getsockname()[1]
    ops.check_port(host, free)  # an IPv6 host is no refusal at start
    with ops.OpsServer(0, Metrics(), lambda: {"model": True}, host=host) as server:
        url = f"http://[{reach}]:{server.port}" if ":" in reach else f"http://{reach}:{server.port}"
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
            assert r.status == 200
        assert server.url == f"http://[::1]:{server.port}"


def test_split_host_port_refuses_a_port_that_is_not_a_number() -> None:
    with pytest.raises(ValueError, match=r"^bootstrap server 'kafka:http' is not host:port: write it like "):
        ops.split_host_port("kafka:http")


def test_the_url_of_a_server_on_every_address_points_at_the_loopback() -> None:
    assert ops.OpsServer(9108, Metrics(), lambda: {}, host="0.0.0.0").url == "http://127.0.0.1:9108"
    assert ops.OpsServer(9108, Metrics(), lambda: {}, host="").url == "http://127.0.0.1:9108"
    assert ops.OpsServer(9108, Metrics(), lambda: {}, host="10.1.2.3").url == "http://10.1.2.3:9108"


def test_a_single_dead_letter_without_a_reason_counts_as_invalid() -> None:
    m = Metrics()
    m.observe_step(StepStats(records=1, dead_letters=1), 0.1)
    assert m.value("aestream_dead_letters_total", reason="invalid") == 1


def test_a_worker_whose_partitions_were_all_revoked_reports_none_assigned() -> None:
    m = Metrics()
    m.set_lag({("readings", 0): 5})
    m.set_lag({})
    assert m.value("aestream_assigned_partitions") == 0
    assert m.value("aestream_consumer_lag", topic="readings", partition="0") is None


def test_alert_events_are_counted_by_type_and_severity() -> None:
    m = Metrics()
    m.alert_event({"type": "opened", "severity": "critical"})
    m.alert_event({"type": "sensor_silent", "severity": "info"})
    assert m.value("aestream_alert_events_total", type="opened", severity="critical") == 1
    assert m.value("aestream_alert_events_total", type="sensor_silent", severity="info") == 1
    assert m.value("aestream_alert_events_total", type="opened", severity="") is None
