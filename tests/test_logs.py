"""Log lines: plain or one JSON object each (``--log-json``), and the same form in the processes a worker starts."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kafka.errors import KafkaError

from aestream.kafka.kafka_python import _FetchProcess
from aestream.ops.logs import LOG_JSON_ENV

ROOT = Path(__file__).resolve().parents[1]

_LOGS = """
import logging, subprocess, sys
from aestream.ops.logs import configure_logging
configure_logging("INFO", json_lines=sys.argv[1] == "json")
log = logging.getLogger("aestream.test")
log.info("sensor %s calibrated", "pump-7")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("scoring failed")
subprocess.run([sys.executable, "-c", "import logging; from aestream.ops.logs import configure_child_logging; "
                "configure_child_logging('fetch'); logging.getLogger('kafka.conn').warning('broker away')"], check=True)
"""


def _run(form: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != LOG_JSON_ENV}
    out = subprocess.run([sys.executable, "-c", _LOGS, form], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True, timeout=60)
    return out.stderr.splitlines()


def test_json_lines_hold_each_record_its_traceback_and_the_child_processes_lines() -> None:
    lines = _run("json")
    docs = [json.loads(line) for line in lines]  # every line, the child's too, is one JSON object
    assert [(d["level"], d["logger"], d["msg"]) for d in docs] == [
        ("INFO", "aestream.test", "sensor pump-7 calibrated"), ("ERROR", "aestream.test", "scoring failed"),
        ("WARNING", "kafka.conn", "broker away")]
    assert "ZeroDivisionError" in docs[1]["exc"] and "process" not in docs[0]
    assert docs[2]["process"] == "fetch"


def test_plain_lines_name_the_child_process() -> None:
    lines = _run("plain")
    assert lines[0].endswith("INFO aestream.test: sensor pump-7 calibrated")
    assert any("ZeroDivisionError" in line for line in lines)
    assert lines[-1].endswith("WARNING aestream fetch process: broker away")
    assert not any(line.startswith("{") for line in lines)


def test_the_fetch_process_logs_its_failure_in_the_workers_form_and_reports_it(
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """The fetch program as the worker starts it (:class:`_FetchProcess`), refused its options: the failure is one
    JSON line on its stderr (not a bare traceback), and the worker's end of the socket gets the error."""
    monkeypatch.setenv(LOG_JSON_ENV, "1")
    fetch = _FetchProcess({"max_poll_records": 10, "bootstrap_servers": ["127.0.0.1:9"], "no_such_option": 1})
    try:
        with pytest.raises(KafkaError, match=r"the fetch process failed: .*no_such_option"):
            fetch.take(60, 10)
        assert fetch.proc.wait(60) == 1
    finally:
        fetch.close()
    docs = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    assert len(docs) == 1 and docs[0]["level"] == "ERROR" and docs[0]["process"] == "fetch"
    assert "no_such_option" in docs[0]["msg"] and "Traceback" in docs[0]["exc"]


def test_kafka_pythons_slow_step_warning_is_held_back_and_its_other_warnings_are_not() -> None:
    """Its I/O thread warns "Task ... blocking the event loop" whenever the worker's thread holds the GIL for a
    tenth of a second (seen in every `aestream run` under load); nothing times out then."""
    code = ("import logging; from aestream.ops.logs import configure_logging; configure_logging('INFO'); "
            "log = logging.getLogger('kafka.net.selector'); "
            "log.warning('Task %r ran for %.3fs (>%.3fs threshold). It is blocking the event loop -- likely a tight "
            "sync loop inside a coroutine. Other pollers will time out.' % ('<Task fetch>', 0.187, 0.1)); "
            "log.warning('Task <Task x> left RUNNING after step; demoting to UNSCHEDULED'); "
            "logging.getLogger('kafka.conn').warning('broker away')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         timeout=60).stderr
    assert "blocking the event loop" not in out
    assert "left RUNNING" in out and "broker away" in out


def test_urllib3s_retry_warnings_which_quote_a_webhooks_path_and_query_are_held_back() -> None:
    code = ("import logging; from aestream.ops.logs import configure_logging; configure_logging('INFO'); "
            "logging.getLogger('urllib3.connectionpool').warning('Retrying (Retry(total=2)) after connection broken "
            "by NewConnectionError: /services/T0/B0/PATHSECRET?token=QUERYSECRET'); "
            "logging.getLogger('aestream.alerts.sinks').warning('alert sink hook (https://h.example) gave up')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         timeout=60).stderr
    assert "SECRET" not in out and "gave up" in out


def test_kafka_pythons_reconnect_lines_to_a_broker_that_refuses_come_once_each_and_aestreams_all_come() -> None:
    """A start against a port nothing listens on (the client's bootstrap cut to 3 s): each form of the client's
    reconnect lines once, not at each of its reconnects."""
    code = ("import logging, socket; from kafka import KafkaConsumer; from aestream.ops.logs import configure_logging; "
            "configure_logging('INFO'); s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; "
            "s.close()\n"
            "for i in range(3): logging.getLogger('aestream.app').warning('same line')\n"
            "try: KafkaConsumer(bootstrap_servers=[f'127.0.0.1:{port}'], bootstrap_timeout_ms=3000)\n"
            "except Exception as e: print(type(e).__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         timeout=60)
    assert out.stdout.strip() == "KafkaTimeoutError"
    lines = out.stderr.splitlines()
    assert sum("same line" in line for line in lines) == 3
    refused = [line for line in lines if "Connection failed" in line]
    assert len(refused) == 1 and "ECONNREFUSED" in refused[0], out.stderr
    assert sum("kafka." in line for line in lines) <= 6, out.stderr  # one line of each form, and the give-up


def test_a_held_back_repeat_is_counted_in_the_next_line_shown() -> None:
    from aestream.ops.logs import _Repeats

    now = [0.0]
    repeats = _Repeats(window_s=60.0, clock=lambda: now[0])

    def shown(name: str, t: float) -> str | None:
        now[0] = t
        record = logging.LogRecord(name, logging.ERROR, __file__, 1, "Connection failed: %s", ("refused",), None)
        return record.getMessage() if repeats.filter(record) else None

    assert [shown("kafka.net.manager", t) for t in (0, 1, 30, 59.9)] == ["Connection failed: refused", None, None, None]
    assert shown("kafka.conn", 2) == "Connection failed: refused"  # another logger: its own line
    assert shown("kafka.net.manager", 60) == "Connection failed: refused (and 3 more like it since the last one shown)"
    assert shown("kafka.net.manager", 61) is None and shown("kafka.net.manager", 125) is not None
