"""Every command the README shows is run by a test, as a subprocess, with the shipped config.toml unchanged.

The README's shell blocks hold only ``aestream …`` and ``make …`` lines; each of those, and each such command in
the prose, is mapped in :data:`COVERED` to the test that runs it (``make test``, this suite, is exempt; ``make demo``
is run as the Makefile's recipe runs it, after its install steps).
The "Running it on your data" block is run as written: in a private working directory holding a byte-for-byte copy
of config.toml (so its var/ paths are private), against a private real broker that the environment variable
AESTREAM_KAFKA_BOOTSTRAP_SERVERS points the shipped config at. ``aestream X`` runs as ``python -m aestream X``:
the console script calls the same ``main``, and this way the checkout under test is the one that runs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from faultkit import Broker  # tests/faults, on the path by conftest
from kafka import KafkaConsumer, TopicPartition

from aestream.commands.simulate import Plant
from aestream.config import load_config
from aestream.detect.scoring import resolve_device

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
YOUR_DATA = "Running it on your data"
EXEMPT = "exempt"

COVERED = {
    "make demo": "test_the_demo_as_written",
    "make test": f"{EXEMPT}: this test suite",
    "aestream train --input normal.csv": "test_running_it_on_your_data_as_written",
    "aestream run": "test_running_it_on_your_data_as_written",
    "aestream simulate --sensors 6 --anomalies 3": "test_running_it_on_your_data_as_written",
    "aestream models list": "test_running_it_on_your_data_as_written",
    "aestream models rollback": "test_running_it_on_your_data_as_written",
    "aestream report --topic anomalies --out report.html": "test_running_it_on_your_data_as_written",
    "aestream evaluate skab DIR": "test_evaluate_skab_as_written",
    # "Scaling out": tests/integration/test_fleet.py runs these with the shipped config.toml plus the README's fleet
    # settings
    "aestream trainer": "test_a_fleet_as_written",
    "aestream models resume": "test_a_fleet_as_written",
}


def _strip_comment(line: str) -> str:
    """The command without its trailing ``# comment`` (a ``#`` outside quotes)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=False)
    lexer.whitespace_split, lexer.commenters = True, "#"
    return " ".join(lexer)


def shell_blocks(text: str) -> list[tuple[str, list[str]]]:
    """``(section, commands)`` of each fenced shell block, comments and blank lines left out."""
    blocks, section, lang, lines = [], "", None, []
    for line in text.splitlines():
        if lang is None and line.startswith("## "):
            section = line[3:].strip()
        if line.startswith("```"):
            if lang is None:
                lang, lines = line[3:].strip(), []
            else:
                if lang in SHELL_LANGUAGES:
                    blocks.append((section, [c for c in map(_strip_comment, lines) if c]))
                lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def prose_commands(text: str) -> list[str]:
    """``aestream …`` and ``make …`` commands quoted as inline code outside fenced blocks."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.findall(r"`((?:aestream|make) [^`]+)`", prose)


def readme_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    return [c for _, cmds in shell_blocks(text) for c in cmds] + prose_commands(text)


def test_the_readme_shell_blocks_hold_only_aestream_and_make_commands() -> None:
    blocks = shell_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 2
    for section, commands in blocks:
        for command in commands:
            assert command.split()[0] in ("aestream", "make"), f"{section}: {command!r} is run by no test"


def test_every_readme_command_is_mapped_to_a_test_that_exists_and_no_mapping_is_stale() -> None:
    shown = set(readme_commands())
    assert shown - set(COVERED) == set(), "commands the README shows that no test runs"
    assert set(COVERED) - shown == set(), "mapped commands the README no longer shows"
    for command, test in COVERED.items():
        assert test.startswith(EXEMPT) or callable(globals().get(test)), (command, test)
    assert {c for c, t in COVERED.items() if t.startswith(EXEMPT)} == {"make test"}


def test_the_helpers_find_commands_and_drop_comments() -> None:
    text = ("## A\n```bash\naestream run   # the worker\n\nmake x  # y\n```\n```json\n{\"a\": 1}\n```\n"
            "see `aestream b`\n")
    assert shell_blocks(text) == [("A", ["aestream run", "make x"])]
    assert prose_commands(text) == ["aestream b"]


# -- "Running it on your data", as written -------------------------------------------------------------------------


@pytest.fixture()
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker of this test alone: the shipped config's fixed topic and group names touch no other test."""
    broker = Broker(tmp_path_factory.mktemp("kafka-readme"))
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


def _argv(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[0] == "aestream"
    return [sys.executable, "-m", "aestream", *words[1:]]


def _write_normal_csv(path: Path, channels: tuple[str, ...], n_steps: int = 400) -> None:
    """Normal readings of the plant `aestream simulate` publishes (same seed, so the same machines), as a user's
    file: ts (epoch ms), sensor, one column per channel."""
    plant = Plant(6, channels, seed=0)
    rows = [",".join(["ts", "sensor", *channels])]
    for sensor, ts, values in plant.readings(n_steps, 1_767_225_600_000):
        rows.append(",".join([str(ts), sensor, *map(str, values)]))
    path.write_text("\n".join(rows) + "\n")


def _events(bootstrap: str, topic: str, done: Callable[[list[Any]], bool], timeout_s: float = 180.0,
            decode: Callable[[bytes], Any] = json.loads) -> list[Any]:
    """The events on ``topic`` from the beginning, once ``done(events)`` holds (or at the timeout)."""
    consumer = KafkaConsumer(bootstrap_servers=[bootstrap], enable_auto_commit=False, group_id=None)
    deadline, events = time.monotonic() + timeout_s, []
    try:
        while not consumer.partitions_for_topic(topic) and not done(events) and time.monotonic() < deadline:
            time.sleep(0.5)
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:  # the topic never appeared: nothing was sent to it (the caller's assertion says what it missed)
            return events
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=2000)
            events += [decode(m.value) for msgs in batch.values() for m in msgs]
            if done(events):
                break
    finally:
        consumer.close()
    return events


def _found(injected: dict[str, Any], events: list[dict[str, Any]], slack_ms: int) -> bool:
    """An anomaly event of the injected anomaly's sensor ends inside it or up to ``slack_ms`` after it."""
    return any(e["sensor"] == injected["sensor"] and injected["start_ms"] <= e["window_end_ms"] <= injected["end_ms"]
               + slack_ms for e in events)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.xdist_group("processes")  # serves the shipped config's metrics port, as the fleet test's worker does
def test_running_it_on_your_data_as_written(private_broker: str, tmp_path: Path) -> None:
    (_, commands), = [b for b in shell_blocks(README.read_text(encoding="utf-8")) if b[0] == YOUR_DATA]
    train, run, simulate, models_list, rollback, report = commands
    assert (train.split()[1], run, simulate.split()[1], models_list, rollback, report.split()[1]) == (
        "train", "aestream run", "simulate", "aestream models list", "aestream models rollback", "report")
    shutil.copyfile(ROOT / "config.toml", tmp_path / "config.toml")
    assert (tmp_path / "config.toml").read_bytes() == (ROOT / "config.toml").read_bytes()
    cfg = load_config(tmp_path / "config.toml", environ={})
    _write_normal_csv(tmp_path / "normal.csv", tuple(cfg.stream.channels))
    env = {**os.environ, "AESTREAM_KAFKA_BOOTSTRAP_SERVERS": private_broker, "PYTHONPATH": str(ROOT)}
    slack_ms = (cfg.stream.window_size + cfg.threshold.n * cfg.stream.stride) * 1000  # a window and the alarm's hold

    def sh(command: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(_argv(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
        return proc

    trained = json.loads(sh(train).stdout)
    assert trained["version"] == "v0001" and trained["family"] == cfg.model.family
    assert (tmp_path / "var" / "models" / "v0001").is_dir()

    worker = subprocess.Popen(_argv(run), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        truth = [json.loads(line) for line in sh(simulate).stdout.splitlines() if line.startswith("{")]
        assert len(truth) == 3
        events = _events(private_broker, cfg.kafka.output_topic,  # or the worker stopped (its log says why)
                         lambda ev: worker.poll() is not None or all(_found(i, ev, slack_ms) for i in truth))
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err[-3000:]  # SIGTERM: finish the batch, flush, commit, exit 0
    missed = [i for i in truth if not _found(i, events, slack_ms)]
    assert missed == [], [(e["sensor"], e["window_end_ms"], e["ratio"]) for e in events
                          if e["sensor"] in {i["sensor"] for i in missed}]
    assert all(e["model_version"] == "v0001" and e["type"] == "anomaly" for e in events)

    assert re.search(r"^\* v0001 ", sh(models_list).stdout, re.M)
    assert json.loads(sh(train).stdout)["version"] == "v0002"  # new normal data, a new version
    assert sh(rollback).stdout.strip() == "current version is now v0001"
    listed = sh(models_list).stdout
    assert re.search(r"^\* v0001 ", listed, re.M) and re.search(r"^  v0002 ", listed, re.M)

    page = Path(sh(report).stdout.strip())
    assert page == Path("report.html") and (tmp_path / page).is_file()
    html = (tmp_path / page).read_text()
    assert all(inj["sensor"] in html for inj in truth)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.xdist_group("processes")
def test_a_fleet_as_written(private_broker: str, tmp_path: Path) -> None:
    """"Scaling out" as written: the shipped fleet config (config.toml with the three keys the README names), the
    key in AESTREAM_MODEL_KEY; a model trained into the models topic, a worker serving it from there and sending
    normal windows, the trainer reading them, and rollback / resume on the topic. (What the trainer and the
    workers do over time, killed and scaled: tests/faults/test_fleet.py.)"""
    text = README.read_text(encoding="utf-8")
    assert all(f"`{c}`" in text for c in ('fleet.models = "kafka"', 'fleet.retrain_in = "trainer"',
                                          "retrain.enabled = true", "deploy/config.fleet.toml",
                                          "aestream trainer", "aestream models resume"))
    shutil.copyfile(ROOT / "deploy" / "config.fleet.toml", tmp_path / "config.toml")
    cfg = load_config(tmp_path / "config.toml", environ={})
    assert (cfg.fleet.models, cfg.fleet.retrain_in, cfg.retrain.enabled) == ("kafka", "trainer", True)
    _write_normal_csv(tmp_path / "normal.csv", tuple(cfg.stream.channels))
    env = {**os.environ, "AESTREAM_KAFKA_BOOTSTRAP_SERVERS": private_broker, "PYTHONPATH": str(ROOT),
           "AESTREAM_MODEL_KEY": "0123456789abcdef"}

    def sh(command: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(_argv(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
        return proc

    trained = json.loads(sh("aestream train --input normal.csv").stdout)
    assert trained["version"] == "v0001" and trained["store"] == "topic aestream-models"
    assert not (tmp_path / "var" / "models").exists(), "no model file: the topic is the store"
    worker = subprocess.Popen(_argv("aestream run"), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    trainer = subprocess.Popen(_argv("aestream trainer"), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        truth = [json.loads(line) for line in sh("aestream simulate --sensors 6 --anomalies 3").stdout.splitlines()
                 if line.startswith("{")]
        slack_ms = (cfg.stream.window_size + cfg.threshold.n * cfg.stream.stride) * 1000
        def stopped() -> bool:  # a worker or the trainer that stopped says why in its log
            return worker.poll() is not None or trainer.poll() is not None

        events = _events(private_broker, cfg.kafka.output_topic,
                         lambda ev: stopped() or all(_found(i, ev, slack_ms) for i in truth))
        windows = _events(private_broker, "aestream-normal-windows", lambda ev: stopped() or len(ev) >= 1,
                          timeout_s=120, decode=lambda value: value)
    finally:
        for proc in (worker, trainer):
            proc.send_signal(signal.SIGTERM)
        (_, worker_err), (_, trainer_err) = worker.communicate(timeout=120), trainer.communicate(timeout=120)
        print(f"the worker's log:\n{worker_err}\nthe trainer's log:\n{trainer_err}")  # shown when the test fails
        if (worker.returncode or trainer.returncode) and shutil.which("ss"):  # a port taken: by whom
            print(subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout)
    assert worker.returncode == 0 and trainer.returncode == 0, (worker.returncode, trainer.returncode)
    assert all(_found(i, events, slack_ms) for i in truth) and {e["model_version"] for e in events} == {"v0001"}, (
        f"{len(events)} event(s) for {len(truth)} injected anomalies; the worker's log:\n{worker_err[-3000:]}")
    assert windows, "the worker sends sampled normal windows for the trainer"
    assert "retraining on schedule" in trainer_err, trainer_err[-3000:]
    # the shipped device "auto": the worker says where it scores (no GPU on CI: the CPU)
    serving = rf"serving model v0001 \(\w+, threshold \S+, on {resolve_device('auto').type}\), was None"
    assert re.search(serving, worker_err), worker_err[-3000:]

    assert json.loads(sh("aestream train --input normal.csv").stdout)["version"] == "v0002"
    assert sh("aestream models rollback").stdout.strip() == "current version is now v0001"
    assert re.search(r"^\* v0001 .*held by a rollback", sh("aestream models list").stdout, re.M)
    assert sh("aestream models resume").stdout.strip() == "v0001 serves; retraining publishes again"
    listed = sh("aestream models list").stdout
    assert re.search(r"^\* v0001 ", listed, re.M) and "held" not in listed


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.xdist_group("processes")  # trains, streams and scores for ~30 s on a 2-core machine: one at a time
def test_the_demo_as_written(private_broker: str, tmp_path: Path) -> None:
    """``make demo``'s recipe with the shipped config, the broker it would start replaced by a private one: the
    shipped family's model, all four anomalies found, no false episode, and no kafka-python warning in its output."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    (recipe,) = re.findall(r"^demo:.*\n\t(.+)$", makefile, re.M)
    assert recipe == "$(BIN)/aestream --log-level WARNING demo", recipe
    shutil.copyfile(ROOT / "config.toml", tmp_path / "config.toml")
    cfg = load_config(tmp_path / "config.toml", environ={})
    env = {**os.environ, "AESTREAM_KAFKA_BOOTSTRAP_SERVERS": private_broker, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(_argv(recipe.replace("$(BIN)/aestream", "aestream")), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == f"training a {cfg.model.family} autoencoder on 1200 normal readings of 6 sensors ...", out
    assert lines[-1] == "detected 4 of 4 injected anomalies", out
    assert any(line.startswith("false episodes: 0 of 4 ") for line in lines), out
    assert " WARNING kafka" not in out and "Traceback" not in out, out
    (report,) = re.findall(r"^report: (\S+) ", proc.stdout, re.M)
    assert Path(report).is_file() and tmp_path in Path(report).parents, report


def _write_skab_file(path: Path, channels: tuple[str, ...], level: float, seed: int) -> None:
    """A SKAB-format experiment of the shipped config's channels at 1 Hz: 620 rows, a shift of two channels on
    rows 500-559 (the anomaly), the machine at its own operating point ``level``."""
    import numpy as np
    import pandas as pd

    rng, t = np.random.default_rng(seed), np.arange(620)
    frame = pd.DataFrame({c: level * (i + 1) + np.sin(t / (5 + i)) + 0.1 * rng.standard_normal(len(t))
                          for i, c in enumerate(channels)})
    frame.insert(0, "datetime", pd.date_range("2020-03-09 10:00:00", periods=len(t), freq="s")
                 .strftime("%Y-%m-%d %H:%M:%S"))
    frame.loc[500:559, list(channels[2:4])] += 3.0
    frame["anomaly"], frame["changepoint"] = 0.0, 0.0
    frame.loc[500:559, "anomaly"] = 1.0
    frame.loc[[500, 560], "changepoint"] = 1.0
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, sep=";", index=False)


@pytest.mark.slow
def test_evaluate_skab_as_written(tmp_path: Path) -> None:
    """The README's evaluation command with the shipped config unchanged, on three synthetic experiments at
    different operating points in SKAB's layout (the benchmark's data is not in the repository)."""
    (command,) = [c for c in prose_commands(README.read_text(encoding="utf-8")) if c.startswith("aestream evaluate")]
    shutil.copyfile(ROOT / "config.toml", tmp_path / "config.toml")
    channels = tuple(load_config(tmp_path / "config.toml", environ={}).stream.channels)
    for i, level in enumerate((0.0, 4.0, -6.0)):
        _write_skab_file(tmp_path / "skab" / "valve9" / f"{i}.csv", channels, level, i)
    argv = _argv(command.replace("DIR", str(tmp_path / "skab")))
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in proc.stdout.splitlines())}
    assert set(shown) >= {"f1", "far", "mar", "nab_standard", "transport", "baselines"}, proc.stdout
    assert shown["baselines"] == "finetune" and float(shown["f1"]) > 0.5, proc.stdout
