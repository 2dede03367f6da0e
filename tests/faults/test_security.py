"""SASL/SSL settings reach both Kafka clients from config.toml or the environment; no secret ever appears in a
log line, a repr or an error message."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aestream.config import load_config
from aestream.kafka.confluent import confluent_options
from aestream.kafka.kafka_python import client_options, open_sink, open_source

pytestmark = pytest.mark.faults

SASL_SECRET = "s3cr3t-SASL-pw-7f9d2c"
SSL_SECRET = "s3cr3t-SSL-key-pw-41ab"
ROOT = Path(__file__).resolve().parents[2]


def _toml(tmp_path: Path, port: int, with_password: bool = False) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(f"""
[kafka]
bootstrap_servers = ["127.0.0.1:{port}"]
security_protocol = "SASL_SSL"
sasl_mechanism = "SCRAM-SHA-512"
sasl_username = "aestream-worker"
{'sasl_password = "' + SASL_SECRET + '"' if with_password else ''}
ssl_cafile = "/etc/aestream/ca.pem"
ssl_certfile = "/etc/aestream/client.pem"
ssl_keyfile = "/etc/aestream/client.key"
""")
    return p


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_settings_reach_kafka_python_and_librdkafka_from_config_and_environment(tmp_path: Path) -> None:
    env = {"AESTREAM_KAFKA_SASL_PASSWORD": SASL_SECRET, "AESTREAM_KAFKA_SSL_PASSWORD": SSL_SECRET}
    cfg = load_config(_toml(tmp_path, 9093), environ=env)
    opts = client_options(cfg.kafka)
    assert opts["security_protocol"] == "SASL_SSL" and opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert opts["sasl_plain_username"] == "aestream-worker" and opts["sasl_plain_password"] == SASL_SECRET
    assert opts["ssl_cafile"] == "/etc/aestream/ca.pem" and opts["ssl_certfile"] == "/etc/aestream/client.pem"
    assert opts["ssl_keyfile"] == "/etc/aestream/client.key" and opts["ssl_password"] == SSL_SECRET
    conf = confluent_options(cfg.kafka)
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "aestream-worker" and conf["sasl.password"] == SASL_SECRET
    assert conf["ssl.ca.location"] == "/etc/aestream/ca.pem" and conf["ssl.key.password"] == SSL_SECRET
    # the environment wins over the file
    from_file = load_config(_toml(tmp_path, 9093, with_password=True), environ={})
    assert client_options(from_file.kafka)["sasl_plain_password"] == SASL_SECRET
    assert client_options(load_config(_toml(tmp_path, 9093, True), environ={
        "AESTREAM_KAFKA_SASL_PASSWORD": "other"}).kafka)["sasl_plain_password"] == "other"


def test_no_secret_in_repr_or_str(tmp_path: Path) -> None:
    cfg = load_config(_toml(tmp_path, 9093), environ={"AESTREAM_KAFKA_SASL_PASSWORD": SASL_SECRET,
                                                      "AESTREAM_KAFKA_SSL_PASSWORD": SSL_SECRET})
    for text in (repr(cfg), str(cfg), repr(cfg.kafka), str(cfg.kafka), f"{cfg!r}"):
        assert SASL_SECRET not in text and SSL_SECRET not in text


@pytest.fixture()
def quick_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-python gives up bootstrapping after 30 s by default; 3 s shows the same log lines."""
    from kafka import KafkaConsumer, KafkaProducer

    monkeypatch.setitem(KafkaConsumer.DEFAULT_CONFIG, "bootstrap_timeout_ms", 3000)
    monkeypatch.setitem(KafkaProducer.DEFAULT_CONFIG, "bootstrap_timeout_ms", 3000)


@pytest.mark.usefixtures("quick_bootstrap")
def test_no_secret_in_logs_when_the_sasl_broker_is_unreachable(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config(_toml(tmp_path, _closed_port()), environ={"AESTREAM_KAFKA_SASL_PASSWORD": SASL_SECRET,
                                                                "AESTREAM_KAFKA_SSL_PASSWORD": SSL_SECRET})
    cfg = cfg.replace(kafka={"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"})
    errors: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for open_client in (open_source, open_sink):
            try:
                client = open_client(cfg.kafka)
                client.close()
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e!r} {e}")
    assert caplog.records, "kafka-python should have logged its connection attempts at DEBUG"
    text = caplog.text + "\n".join(errors) + "".join(repr(r.args) for r in caplog.records)
    assert SASL_SECRET not in text and SSL_SECRET not in text


def test_no_secret_in_the_cli_output_at_debug(tmp_path: Path) -> None:
    env = {**os.environ, "AESTREAM_KAFKA_SASL_PASSWORD": SASL_SECRET, "AESTREAM_KAFKA_SSL_PASSWORD": SSL_SECRET,
           "OMP_NUM_THREADS": "1"}
    cfg = _toml(tmp_path, _closed_port())
    cfg.write_text(cfg.read_text().replace("SASL_SSL", "SASL_PLAINTEXT").replace("SCRAM-SHA-512", "PLAIN")
                   + f'\n[paths]\nmodel_dir = "{tmp_path / "models"}"\n')
    cli = ("import kafka, sys; from aestream.commands.cli import main\n"
           "for c in (kafka.KafkaConsumer, kafka.KafkaProducer): c.DEFAULT_CONFIG['bootstrap_timeout_ms'] = 3000\n"
           "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", cli, "--log-level", "DEBUG", "--config", str(cfg),
                           "run", "--max-idle-s", "2"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    out = proc.stdout + proc.stderr
    assert out.strip(), "the CLI should have said something about the unreachable broker"
    assert SASL_SECRET not in out and SSL_SECRET not in out
