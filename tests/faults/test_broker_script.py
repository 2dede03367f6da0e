"""``deploy/kafka/kafka.sh start`` on a port that another process holds: a clear error at once, and the tests'
brokers draw another port.

A CI run once waited the script's whole 90 s on a broker that had died at its start: between the tests' choice of a
free port and the broker's bind, another process's outgoing connection had been given that port as its local one.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import faultkit
import pytest

pytestmark = pytest.mark.integration


def _held(port: int) -> socket.socket:
    """``port`` bound and not listening: what a client connection's local port looks like to a broker."""
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    return s


def test_a_port_that_is_taken_is_named_and_no_broker_is_started(tmp_path: Path) -> None:
    port = faultkit.free_port()
    with _held(port + 1):  # the controller's port
        done = subprocess.run(["bash", str(faultkit.KAFKA_SH), "start", str(port), str(tmp_path)],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert f"port {port + 1} is taken" in done.stderr and "pick another PORT" in done.stderr, done.stderr
    assert not (tmp_path / "kafka.pid").exists() and not (tmp_path / "server.log").exists()


@pytest.mark.slow
def test_a_broker_that_exits_before_it_opens_its_port_fails_the_start_at_once(tmp_path: Path) -> None:
    port = faultkit.free_port()
    start = subprocess.Popen(["bash", str(faultkit.KAFKA_SH), "start", str(port), str(tmp_path)],
                             stderr=subprocess.PIPE, text=True)
    try:
        faultkit.wait_until(lambda: (tmp_path / "format.log").exists() or start.poll() is not None, 120,
                            every_s=0.01, what="the script's format step")
        with _held(port):  # after the script's check, before the broker's bind
            _, err = start.communicate(timeout=120)  # not the 90 s wait for a port that never opens
    finally:
        start.kill()
        subprocess.run(["bash", str(faultkit.KAFKA_SH), "stop", str(tmp_path)], capture_output=True, check=False)
    assert start.returncode == 1, err
    assert f"kafka exited before it opened 127.0.0.1:{port}" in err, err
    assert "Address already in use" in err, err  # the broker's own reason, from its log's tail
    assert not (tmp_path / "kafka.pid").exists()


@pytest.mark.slow
def test_a_tests_broker_whose_port_is_taken_starts_on_another(tmp_path: Path) -> None:
    broker = faultkit.Broker(tmp_path)
    first = broker.port
    with _held(first):
        broker.start()
    try:
        assert broker.port != first and broker.bootstrap == f"127.0.0.1:{broker.port}"
        assert faultkit.answers(broker.port)
    finally:
        broker.stop()


def test_ports_are_drawn_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {faultkit.free_port() for _ in range(20)}
    assert all(10_000 <= p < low - 1 for p in ports), sorted(ports)
    assert len(ports) > 1  # drawn, not one fixed port that both pytest workers would share


def _time_wait(port: int) -> None:
    """Leave a connection of ``port`` in TIME_WAIT, as a broker stopped with a client connected leaves its own."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the JVM's server sockets are
        server.bind(("127.0.0.1", port))
        server.listen()
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the side that closes first waits: the broker's
            client.recv(1)


@pytest.mark.slow
def test_a_port_left_in_time_wait_by_a_stopped_broker_is_free_to_start_on(tmp_path: Path) -> None:
    port = faultkit.free_port()
    _time_wait(port)
    try:
        done = subprocess.run(["bash", str(faultkit.KAFKA_SH), "start", str(port), str(tmp_path)],
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        assert faultkit.answers(port)
    finally:
        subprocess.run(["bash", str(faultkit.KAFKA_SH), "stop", str(tmp_path)], capture_output=True, check=False)
