from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from aestream.commands.cli import build_parser, main

COMMANDS = ["run", "train", "retrain", "simulate", "demo", "models", "evaluate", "decode", "embed", "report"]


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS]])
def test_help_explains_every_command(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: aestream" in out and "--help" in out
    if command:
        assert len(out.splitlines()) > 4


def test_every_subcommand_is_in_the_parser() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(COMMANDS) <= set(sub.choices)  # type: ignore[arg-type]


def test_a_bad_config_prints_one_clear_line_and_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[stream]\nwindow_size = "big"\n')
    proc = subprocess.run([sys.executable, "-m", "aestream", "--config", str(cfg), "models", "list"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("aestream: error: config key stream.window_size = 'big' is invalid: "
                                   "it must be a whole number")


def test_models_list_on_an_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[paths]\nmodel_dir = "{tmp_path / "m"}"\n')
    assert main(["--config", str(cfg), "models", "list"]) == 0
    assert "no versions in" in capsys.readouterr().out


def test_a_file_too_short_for_one_window_is_an_error_line_not_a_traceback(tmp_path: Path) -> None:
    data = tmp_path / "short.csv"
    data.write_text("Accelerometer1RMS,Accelerometer2RMS,Current,Pressure,Temperature,Thermocouple,Voltage,"
                    "Volume Flow RateRMS\n" + "1,2,3,4,5,6,7,8\n" * 5)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[paths]\nmodel_dir = "{tmp_path / "m"}"\n[model]\ndevice = "cpu"\n')
    proc = subprocess.run([sys.executable, "-m", "aestream", "--config", str(cfg), "train", "--input", str(data)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("aestream: error: ") and "Traceback" not in proc.stderr
    assert "full window of 40 readings" in proc.stderr


def test_train_on_a_device_torch_cannot_use_here_is_one_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[paths]\nmodel_dir = "{tmp_path / "m"}"\n[model]\ndevice = "cuda:99"\n')
    assert main(["--config", str(cfg), "train", "--input", str(tmp_path / "unread.csv")]) == 2
    assert "config key model.device = 'cuda:99' cannot be used on this host" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["simulate", "--steps", "10"], ["report", "--topic", "anomalies"],
                                     ["decode", "--topic", "latent"]])
def test_commands_that_open_a_kafka_client_check_its_settings_first(
        tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"  # nothing listens on port 1: a client would time out instead
    cfg.write_text('[kafka]\nbootstrap_servers = ["127.0.0.1:1"]\nsecurity_protocol = "SSL"\n'
                   f'ssl_cafile = "{tmp_path / "missing-ca.pem"}"\n')
    assert main(["--config", str(cfg), *command]) == 2
    assert "config key kafka.ssl_cafile" in capsys.readouterr().err


HEADER = ("ts,Accelerometer1RMS,Accelerometer2RMS,Current,Pressure,Temperature,Thermocouple,Voltage,"
          "Volume Flow RateRMS\n")


@pytest.mark.parametrize(("row", "message"), [
    ("2026-01-01T00:00:05Z,1,2,,4,5,6,7,8", "data column 'Current' is empty at row 5 (from 0, after the header)"),
    ("2026-01-01T00:00:05Z,1,2,abc,4,5,6,7,8", "data column 'Current' holds 'abc', not a finite number, at row 5"),
    ("yesterday,1,2,3,4,5,6,7,8", "data column 'ts' holds 'yesterday' at row 5 (from 0, after the header): not a "
                                  "timestamp"),
])
def test_a_bad_cell_in_the_training_data_is_named_in_one_line(tmp_path: Path, row: str, message: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    good = [f"2026-01-01T00:00:{i:02d}Z,1,2,3,4,5,6,7,8" for i in range(5)]
    data = tmp_path / "bad.csv"
    data.write_text(HEADER + "\n".join([*good, row]) + "\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[paths]\nmodel_dir = "{tmp_path / "m"}"\n[model]\ndevice = "cpu"\n')
    assert main(["--config", str(cfg), "train", "--input", str(data)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("name", "content", "extra", "message"), [
    ("empty.csv", b"", [], "data file {path} cannot be read as CSV (EmptyDataError: No columns to parse from file)"),
    ("quote.csv", b'a,b\n"1,2\n', [], "data file {path} cannot be read as CSV (ParserError: Error tokenizing data. "
                                      "C error: EOF inside string starting at row 1)"),
    ("x.parquet", b"not parquet", [], "data file {path} cannot be read as Parquet (ArrowInvalid: "),
    ("semi.csv", b"a;b\n1;2\n", ["--sep", ";;"], "data file {path} cannot be read as CSV separated by ';;' "),
])
def test_a_training_file_that_cannot_be_read_is_one_line_and_exit_2(
        tmp_path: Path, name: str, content: bytes, extra: list[str], message: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / name
    data.write_bytes(content)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[paths]\nmodel_dir = "{tmp_path / "m"}"\n[model]\ndevice = "cpu"\n')
    assert main(["--config", str(cfg), "train", "--input", str(data), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aestream: error: " + message.format(path=data)) and "Traceback" not in err, err


@pytest.mark.parametrize("argv", [["run", "--max-idle-s", "nan"], ["simulate", "--rate", "-5"],
                                  ["report", "--events", "x.jsonl", "--timeout-s", "inf"]])
def test_a_time_or_rate_that_is_no_finite_number_of_0_or_more_is_refused(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and "is invalid: use a finite number of 0 or more" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["simulate", "--sensors", "0"], ["demo", "--sensors", "-1"],
                                  ["simulate", "--batch", "0"]])
def test_a_count_below_its_least_is_refused_by_the_parser(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and "is too small: use " in capsys.readouterr().err


class _StartingApp:
    """Stands in for a worker still being built when SIGTERM comes: run() says whether it was asked to stop."""

    def __init__(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True

    def run(self, max_idle_s: float | None = None) -> Any:
        return SimpleNamespace(stopped_before_run=self.stopped)


@pytest.fixture
def signals_restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """SIGTERM/SIGINT handlers put back after the test; until the CLI installs its own, a signal is recorded. A
    second signal's exit at once (``os._exit``) raises ``SystemExit`` here instead."""
    import aestream.commands.cli

    def exit_at_once(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr(aestream.commands.cli, "_exit_at_once", exit_at_once)
    seen: list[int] = []
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in before:
        signal.signal(s, lambda signum, _f: seen.append(signum))
    yield seen
    for s, handler in before.items():
        signal.signal(s, handler)


def test_a_sigterm_while_the_worker_starts_stops_it_before_its_first_poll(
        monkeypatch: pytest.MonkeyPatch, signals_restored: list[int]) -> None:
    import aestream.app

    apps: list[_StartingApp] = []

    def build_app(cfg: Any, device: str | None = None) -> _StartingApp:
        os.kill(os.getpid(), signal.SIGTERM)  # torch, the model and the clients take seconds to load
        apps.append(_StartingApp())
        return apps[-1]

    monkeypatch.setattr(aestream.app, "build_app", build_app)
    assert main(["run"]) == 0
    assert signals_restored == [], "the signal came before the CLI's handler"
    assert apps[0].stopped, "the worker started its loop after a SIGTERM"


def test_a_second_signal_while_the_worker_starts_exits_at_once(
        monkeypatch: pytest.MonkeyPatch, signals_restored: list[int]) -> None:
    import aestream.app

    def build_app(cfg: Any, device: str | None = None) -> _StartingApp:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # a build that hangs (an unreachable broker) still ends on Ctrl-C twice
        raise AssertionError("the second signal did not end the build")

    monkeypatch.setattr(aestream.app, "build_app", build_app)
    with pytest.raises(SystemExit) as exit_:
        main(["run"])
    assert exit_.value.code == 128 + signal.SIGINT


def _signal_on_import(monkeypatch: pytest.MonkeyPatch, signum: int) -> None:
    """A signal while the console script imports the command line (torch, which takes seconds)."""
    import builtins

    import aestream.commands.entry

    monkeypatch.setattr(aestream.commands.entry, "_EARLY", [])
    real_import = builtins.__import__

    def importing(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "aestream.commands.cli":
            os.kill(os.getpid(), signum)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", importing)


def test_a_signal_while_the_console_script_imports_stops_the_worker_before_its_first_poll(
        monkeypatch: pytest.MonkeyPatch, signals_restored: list[int]) -> None:
    import aestream.app
    from aestream.commands.entry import main as console_script

    apps: list[_StartingApp] = []
    monkeypatch.setattr(aestream.app, "build_app", lambda cfg, device=None: apps.append(_StartingApp()) or apps[-1])
    monkeypatch.setattr(sys, "argv", ["aestream", "run"])
    _signal_on_import(monkeypatch, signal.SIGTERM)
    assert console_script() == 0
    assert signals_restored == [] and apps[0].stopped, "the worker started its loop after a SIGTERM"


def test_a_signal_while_the_command_line_loads_its_config_is_not_lost(
        monkeypatch: pytest.MonkeyPatch, signals_restored: list[int]) -> None:
    import aestream.app
    import aestream.commands.cli
    from aestream.commands.entry import main as console_script

    apps: list[_StartingApp] = []
    monkeypatch.setattr(aestream.app, "build_app", lambda cfg, device=None: apps.append(_StartingApp()) or apps[-1])
    real_load = aestream.commands.cli.load_config

    def load_config(path: Any) -> Any:  # after the console script handed its signals on, before the CLI's handlers
        os.kill(os.getpid(), signal.SIGTERM)
        return real_load(path)

    monkeypatch.setattr(aestream.commands.cli, "load_config", load_config)
    monkeypatch.setattr(sys, "argv", ["aestream", "run"])
    monkeypatch.setattr(aestream.commands.entry, "_EARLY", [])
    assert console_script() == 0
    assert signals_restored == [] and apps[0].stopped, "the worker started its loop after a SIGTERM"


def test_a_signal_while_the_console_script_imports_ends_any_other_command_as_it_would_have(
        monkeypatch: pytest.MonkeyPatch, signals_restored: list[int], capsys: pytest.CaptureFixture[str]) -> None:
    from aestream.commands.entry import main as console_script

    monkeypatch.setattr(sys, "argv", ["aestream", "models", "list"])
    _signal_on_import(monkeypatch, signal.SIGINT)
    assert console_script() == 128 + signal.SIGINT
    assert capsys.readouterr().out == "", "the command did not run"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


_STOP_WAITS = """
import os, signal, sys, time
import aestream.app
from aestream.commands.cli import main

if sys.argv[1] == "closed":  # started with no stdout (as a daemon may be)
    os.close(1)
    sys.stdout = None

class Stuck:  # a worker whose stop waits on a broker that is away: its flush, then its clients' close
    def stop(self):
        pass

    def run(self, max_idle_s=None):
        os.kill(os.getpid(), signal.SIGTERM)
        print("stopping", file=sys.stderr, flush=True)
        try:
            time.sleep(120)
        finally:
            time.sleep(120)

aestream.app.build_app = lambda cfg, device=None: Stuck()
sys.exit(main(["run"]))
"""


@pytest.mark.parametrize("stdout", ["open", "closed"])
def test_a_second_signal_while_the_stop_waits_on_the_broker_exits_at_once_without_unwinding(stdout: str) -> None:
    with subprocess.Popen([sys.executable, "-c", _STOP_WAITS, stdout], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        while (line := proc.stderr.readline()) not in ("stopping\n", ""):  # past the start's log lines
            pass
        assert line, "the child ended before its stop"
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=60)  # the stop's own waits: 240 s
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AssertionError("the second signal waited for the stop's finally blocks") from None
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "a second signal: exiting at once (code 143)" in err


def test_a_broker_that_does_not_answer_at_start_is_one_line_and_exit_1(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from kafka import KafkaConsumer

    import aestream.app

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]

    def build_app(cfg: Any, device: str | None = None) -> Any:  # the worker's first client, with a shorter wait
        return KafkaConsumer(bootstrap_servers=[f"127.0.0.1:{port}"], bootstrap_timeout_ms=300)

    monkeypatch.setattr(aestream.app, "build_app", build_app)
    assert main(["run"]) == 1  # systemd restarts it
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith("aestream: error:")]
    assert len(said) == 1 and "Traceback" not in err
    assert said[0].startswith("aestream: error: KafkaTimeoutError: Unable to bootstrap from ['127.0.0.1:")
    assert "no broker answered; check kafka.bootstrap_servers" in said[0]


class _StoppingApp(_StartingApp):
    """Stands in for a worker whose stop waits on a broker that is away: Ctrl-C, then Ctrl-C again while it waits."""

    def run(self, max_idle_s: float | None = None) -> Any:
        os.kill(os.getpid(), signal.SIGINT)
        assert self.stopped, "the first signal did not ask the worker to stop"
        os.kill(os.getpid(), signal.SIGINT)  # while the stop still flushes
        raise AssertionError("the second signal did not end the stop")


def test_a_second_signal_while_the_worker_stops_exits_at_once(
        monkeypatch: pytest.MonkeyPatch, signals_restored: list[int]) -> None:
    import aestream.app

    monkeypatch.setattr(aestream.app, "build_app", lambda cfg, device=None: _StoppingApp())
    with pytest.raises(SystemExit) as exit_:
        main(["run"])
    assert exit_.value.code == 128 + signal.SIGINT


def test_with_log_json_the_last_error_is_a_json_line_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[kafka]\ngroup_id = "caf\xe9"\n')
    assert main(["--log-json", "--config", str(bad), "models", "list"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    doc = json.loads(line)
    assert doc["level"] == "ERROR" and doc["msg"].startswith(f"aestream: error: config file {bad} is not UTF-8 text")
    assert main(["--config", str(bad), "models", "list"]) == 2
    assert capsys.readouterr().err.startswith("aestream: error: config file ")


def test_a_local_broker_that_does_not_start_is_one_line_naming_what_it_needs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import socket

    import aestream.commands.demo as demo
    from aestream.errors import AestreamError

    script = tmp_path / "kafka.sh"
    script.write_text("echo 'java: command not found' >&2\nexit 3\n")
    monkeypatch.setattr(demo, "KAFKA_SCRIPT", script)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(AestreamError, match=r"^the local broker did not start \(kafka\.sh start exited 3; its lines "
                                            r"above say why\): it needs Java 17\+ and Maven"):
        demo.start_local_broker(f"127.0.0.1:{port}", out=io.StringIO())
