"""The ``aestream`` command line: run, train, simulate, demo, models, evaluate."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tqdm.contrib.logging import logging_redirect_tqdm

from aestream.config import Config, load_config
from aestream.errors import AestreamError, BundleError, DeliveryError
from aestream.ops.logs import LOG_JSON_ENV, configure_logging

__all__ = ["build_parser", "main"]

log = logging.getLogger(__name__)
DEFAULT_CONFIG = "config.toml"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aestream",
        description="Streaming sensor anomaly detection with torch autoencoders on Kafka.",
        epilog="Configuration: config.toml (every key: docs/configuration.md). Bad config exits with code 2.",
    )
    p.add_argument("--config", "-c", default=None,
                   help=f"path to the TOML config (default: ./{DEFAULT_CONFIG} if present, else built-in defaults)")
    p.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="log level (default: ops.log_level, INFO)")
    p.add_argument("--log-json", action="store_true", help="write logs as one JSON object per line")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run the worker daemon (consume, score, emit) until SIGTERM/SIGINT",
                       description="Join the consumer group, score windows, emit anomaly events. Stops cleanly "
                                   "on SIGTERM/SIGINT: finishes the batch, flushes, commits, exits 0 (with the "
                                   "broker away: after 20 s for its acknowledgements and 10 s for the commit, exit 1, "
                                   "nothing committed); a second signal exits at "
                                   "once.")
    r.add_argument("--max-idle-s", type=_non_negative, default=None,
                   help="exit after this many seconds without records (default: run forever)")
    r.add_argument("--device", default=None, help="override model.device (auto, cpu, cuda)")

    t = sub.add_parser("train", help="train a model bundle on a CSV/Parquet file of normal readings",
                       description="Fit the configured family on normal data, calibrate the threshold, and "
                                   "publish the bundle as the current version of the model store.")
    t.add_argument("--input", "-i", required=True, help="CSV or Parquet file with one column per channel")
    t.add_argument("--ts-column", help="timestamp column (epoch ms or ISO-8601); default: ts, if the file has it")
    t.add_argument("--sensor-column", help="sensor id column; default: sensor, if the file has it")
    t.add_argument("--sep", default=None, help="CSV separator (default: sniffed)")
    t.add_argument("--family", default=None, help="override model.family")

    sub.add_parser("retrain", help="retrain now from the saved reservoir, gate the candidate, publish it",
                   description="Train a candidate on paths.state_dir/reservoir.npz (with fleet.retrain_in = "
                               "\"trainer\": on the normal-windows topic), validate it against the current model "
                               "on the most recent windows, and publish it if it passes. Prints the outcome as "
                               "JSON; exits 0 if published, 1 if rejected, failed or skipped. Running workers "
                               "follow the new version within a batch.")

    sub.add_parser("trainer", help="the fleet's trainer: retrain on every worker's normal windows, on schedule",
                   description="With fleet.retrain_in = \"trainer\": read the normal windows every worker sends "
                               "to <group_id>-normal-windows into one reservoir, retrain on retrain.schedule in a "
                               "killable subprocess, gate the candidate and publish it to the model store "
                               "(fleet.models). Run exactly one. Stops on SIGTERM/SIGINT.")

    s = sub.add_parser("simulate", help="publish a synthetic multi-sensor stream with injected anomalies",
                       description="Publish readings of a simulated plant to the first input topic, with "
                                   "anomalies at known times after the sensors' calibration "
                                   "(baselines.n_readings); prints each injected anomaly as a JSON line.")
    s.add_argument("--sensors", type=_at_least(1), default=6, help="number of sensors (default 6)")
    s.add_argument("--steps", type=_at_least(1), default=900, help="readings per sensor (default 900)")
    s.add_argument("--anomalies", type=_at_least(0), default=3, help="anomalies to inject (default 3)")
    s.add_argument("--rate", type=_non_negative, default=0.0, help="readings per second; 0 = as fast as possible")
    s.add_argument("--batch", type=_at_least(1), default=1, help="readings per message (batched form when > 1)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--truth", default=None, help="also write the injected anomalies to this JSON file")

    d = sub.add_parser("demo", help="the whole pipeline on a simulated plant (starts a local broker if needed)",
                       description="Start the local broker if none answers, train on a simulated plant's normal "
                                   "start, stream it with injected anomalies through the worker, print the events "
                                   "and 'detected X of Y injected anomalies'. Exits 1 if any is missed.")
    d.add_argument("--sensors", type=_at_least(1), default=6, help="number of sensors (default 6)")
    d.add_argument("--seed", type=int, default=7, help="random seed (default 7)")

    m = sub.add_parser("models", help="list, show or roll back model versions",
                       description="Inspect the model store (fleet.models: paths.model_dir or the models topic) "
                                   "and move its current pointer.")
    msub = m.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    msub.add_parser("list", help="list versions, marking the current one")
    show = msub.add_parser("show", help="print a version's metadata")
    show.add_argument("version", nargs="?", default=None, help="version (default: current)")
    rb = msub.add_parser("rollback", help="make an older version current and hold it there (running workers "
                                          "follow within a batch; retraining publishes nothing until resume)")
    rb.add_argument("version", nargs="?", default=None, help="version (default: the one before current)")
    msub.add_parser("resume", help="lift a rollback's hold: retraining publishes again")

    dc = sub.add_parser("decode", help="turn latent codes from the latent topic back into windows",
                        description="Read streams.latent_topic from the beginning and print one JSON line per code: "
                                    "the window decoded with the model version that encoded it (detrended "
                                    "channels at the level their record carries; an AEL3 record's residual "
                                    "puts every value within half a step of the scored reading).")
    dc.add_argument("--topic", default=None, help="latent topic (default: streams.latent_topic)")
    dc.add_argument("--idle-s", type=_non_negative, default=2.0,
                    help="stop after this long without records (default 2)")

    em = sub.add_parser("embed", help="write the latent codes of a CSV/Parquet file of readings to Parquet",
                        description="Window a file of readings like the worker does (stream.window_size, stride) "
                                    "and write each window's latent code (and its level on each detrended channel), "
                                    "for clustering or downstream models.")
    em.add_argument("input", help="CSV or Parquet file: one column per channel, optional ts and sensor columns")
    em.add_argument("--out", required=True, help="output Parquet file")
    em.add_argument("--ts-column", help="timestamp column; default: ts, if the file has it")
    em.add_argument("--sensor-column", help="sensor id column; default: sensor, if the file has it")
    em.add_argument("--sep", default=None, help="CSV separator (default: sniffed)")
    em.add_argument("--version", default=None, help="model version (default: current)")

    rp = sub.add_parser("report", help="draw an HTML (or PNG) report of anomaly events",
                        description="A self-contained HTML page (or one PNG): per-sensor score timeline with its "
                                    "threshold, anomalies and alert episodes, and the channel contributions of the "
                                    "top anomalies, from a JSON-lines file of events or a topic. Needs matplotlib "
                                    "(pip install 'aestream[report]').")
    src = rp.add_mutually_exclusive_group(required=True)
    src.add_argument("--events", metavar="FILE", help="JSON-lines file of events (e.g. docs/sample-events.jsonl)")
    src.add_argument("--topic", metavar="TOPIC", help="read this topic from the beginning (e.g. anomalies)")
    rp.add_argument("--out", "-o", default=None,
                    help="output file (default report.html, or report.png with --png; *.png: a PNG)")
    rp.add_argument("--png", action="store_true", help="write one PNG instead of HTML")
    rp.add_argument("--top", type=_at_least(1), default=8, help="anomalies in the contribution chart (default 8)")
    rp.add_argument("--max-sensors", type=_at_least(1), default=8,
                    help="sensors on the timeline, most anomalous first (default 8)")
    rp.add_argument("--timeout-s", type=_non_negative, default=60.0, help="the longest to read --topic (default 60)")

    e = sub.add_parser("evaluate", help="score the detector on a labelled benchmark",
                       description="Evaluate the detector the daemon runs on SKAB with its published protocol: "
                                   "each file is one sensor; the shared model trains on the first 400 rows of "
                                   "every file (or --train), each sensor calibrates its baseline on its own first "
                                   "rows, the rest are test points. --stream sends the readings through a real "
                                   "broker and the real `aestream run`.")
    e.add_argument("benchmark", choices=["skab"], help="benchmark name")
    e.add_argument("path", help="SKAB folder: its CSV files, or SKAB's layout with valve1/, valve2/, other/ below")
    e.add_argument("--stream", action="store_true",
                   help="publish to the configured broker (started locally if none answers) and run `aestream run` "
                        "as a subprocess; default: the same worker in this process")
    e.add_argument("--train", default=None, metavar="CSV",
                   help="train the shared model on this SKAB-format file (e.g. anomaly-free.csv) instead")
    e.add_argument("--baselines", choices=["finetune", "shared", "off"], default=None,
                   help="override baselines.mode (off: every sensor judged by the shared model's own scales)")
    e.add_argument("--json", action="store_true", help="print exactly one JSON object")
    e.add_argument("--plot", default=None, metavar="DIR", help="draw one PNG per file into DIR")
    e.add_argument("--predictions", default=None, metavar="OUTDIR", help="write one CSV of predictions per file")
    return p


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number of ``low`` or more (argparse prints the error and exits 2)."""

    def whole(text: str) -> int:
        value = int(text)  # a ValueError: argparse says "invalid whole value"
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is too small: use {low} or more")
        return value

    return whole


def _non_negative(text: str) -> float:
    """An argparse type for a time in seconds or a rate: a finite number of 0 or more (``nan`` would never compare
    as over: never idle)."""
    value = float(text)  # a ValueError: argparse says "invalid _non_negative value"
    if not 0.0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"{text} is invalid: use a finite number of 0 or more")
    return value


class _Refusals(logging.Handler):
    """Whether kafka-python logged a broker refusing to let a client in (SASL credentials, the broker's
    certificate): its bootstrap then gives up with a timeout that does not say why."""

    KINDS = (("AuthenticationFailed", "refused the SASL credentials",
              "kafka.sasl_mechanism, kafka.sasl_username and AESTREAM_KAFKA_SASL_PASSWORD"),
             ("CERTIFICATE_VERIFY_FAILED", "has a certificate that kafka.ssl_cafile does not trust",
              "kafka.ssl_cafile (the CA that signed the broker's certificate) and that the bootstrap host is a name "
              "in that certificate"))

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: tuple[str, str] | None = None  # (what the broker did, what to check)

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        for mark, what, fix in self.KINDS:
            if mark in text:
                self.last = (what, fix)


def _error(line: str) -> None:
    """The command's last word on stderr: one plain line, or with ``--log-json`` (``ops.log_json``) one JSON object
    like every other line, so a log shipper reading that output gets it too."""
    if os.environ.get(LOG_JSON_ENV) == "1":
        logging.getLogger("aestream").error(line)
    else:
        print(line, file=sys.stderr)


def main(argv: Sequence[str] | None = None, early_signals: Sequence[int] | None = None) -> int:
    """The command line. ``early_signals`` (from the console script, :mod:`~aestream.commands.entry`, whose handler
    holds SIGTERM/SIGINT until here): the signals that came before; ``run`` and ``trainer`` then stop before their
    first poll, and any other command ends now, as the signal would have ended it (128 + the signal), and gets
    the default handlers back."""
    args = build_parser().parse_args(argv)
    args.early_signals = [] if early_signals is None else early_signals  # the list the console script fills
    if early_signals is not None and args.command not in _DAEMONS:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if early_signals:
            return 128 + early_signals[0]
    configure_logging(args.log_level or "INFO", args.log_json)
    refusals = _Refusals()
    logging.getLogger("kafka").addHandler(refusals)
    try:
        cfg = _load(args.config)
        configure_logging(args.log_level or cfg.ops.log_level, args.log_json or cfg.ops.log_json)
        with logging_redirect_tqdm():  # log lines print above a progress bar, not through it
            return int(_COMMANDS[args.command](cfg, args) or 0)
    except DeliveryError as e:  # the broker away: a restart may succeed (systemd restarts any code but 2)
        _error(f"aestream: error: {e}")
        return 1
    except AestreamError as e:
        _error(f"aestream: error: {e}")
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        if not _stdout_gone():  # another pipe or socket: an error to show
            raise
        # `aestream models show | head`: the reader has gone, so has the rest of the output
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes it
        return 1
    except Exception as e:
        from aestream.kafka.kafka_python import unreachable

        if not unreachable(e):
            raise
        if refusals.last is not None:
            what, fix = refusals.last
            _error(f"aestream: error: {e}: the broker {what} (the log above says how); check {fix}")
            return 2  # a setting to fix: a restart would fail the same way
        _error(f"aestream: error: {e}: no broker answered; check kafka.bootstrap_servers (or "
               "AESTREAM_KAFKA_BOOTSTRAP_SERVERS) and that the brokers run (a restart tries again)")
        return 1
    finally:
        logging.getLogger("kafka").removeHandler(refusals)


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has gone (``| head`` has its lines)."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll here, or stdout no file
        return False


def _load(path: str | None) -> Config:
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    return load_config(path)


def _cmd_run(cfg: Config, args: argparse.Namespace) -> int:
    stopper = _Stopper(args.early_signals)  # before the build: the model and the clients take seconds to load
    from aestream.app import build_app

    app = stopper.attach(build_app(cfg, device=args.device))
    totals = app.run(max_idle_s=args.max_idle_s)
    log.info("stopped: %s", {k: v for k, v in vars(totals).items() if k != "events_out"})
    return 0


class _Stoppable(Protocol):
    def stop(self) -> None: ...


_S = TypeVar("_S", bound=_Stoppable)


_DAEMONS = ("run", "trainer")


def _exit_at_once(code: int) -> None:
    """End the process now, without unwinding: a stop waiting on a broker that is away runs ``finally`` blocks that
    wait in turn (closing the producer and the consumer, 15 s), which a second signal is not to wait for."""
    try:
        log.warning("a second signal: exiting at once (code %d); the records not committed are read again", code)
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):  # None when closed at start; a broken pipe raises
            with contextlib.suppress(AttributeError, OSError, ValueError):
                stream.flush()
    finally:
        os._exit(code)


class _Stopper:
    """SIGTERM/SIGINT stop the daemon after the step in flight, and exit 0. One that comes while the daemon is
    still being built (or the command line imported) stops it before its first poll. A second one exits at once
    (128 + the signal): a build or a stop waiting on a broker that is away is not waited for (offsets not
    committed are read again)."""

    def __init__(self, early: Sequence[int] = ()) -> None:
        self._target: _Stoppable | None = None
        # the signals before these handlers (the console script's handler adds them to this list until then) and
        # after: each is counted once, wherever it lands
        self._early, self._signals = early, 0
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def attach(self, target: _S) -> _S:
        self._target = target
        if self._early or self._signals:
            target.stop()
        return target

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals += 1
        if len(self._early) + self._signals > 1:
            _exit_at_once(128 + signum)
        if self._target is not None:
            self._target.stop()


def _cmd_retrain(cfg: Config, args: argparse.Namespace) -> int:
    from aestream.app import build_trainer, open_model_store
    from aestream.retrain.retrainer import Retrainer, open_reservoir
    from aestream.training.build import train_bundle_from_windows
    from aestream.training.fit import with_progress

    trainer = with_progress(train_bundle_from_windows)  # a bar on the terminal, also from the training subprocess
    if cfg.fleet.retrain_in == "trainer":
        outcome = build_trainer(cfg, trainer=trainer, serve=False).run_now()
    else:
        reservoir, _ = open_reservoir(cfg)
        outcome = Retrainer(cfg, reservoir, open_model_store(cfg), trainer=trainer).run_once(force=True)
    print(json.dumps(outcome.to_dict()))
    return 0 if outcome.status == "published" else 1


def _cmd_trainer(cfg: Config, args: argparse.Namespace) -> int:
    stopper = _Stopper(args.early_signals)
    from aestream.app import build_trainer

    app = stopper.attach(build_trainer(cfg))
    app.run()
    return 0


def _cmd_train(cfg: Config, args: argparse.Namespace) -> int:
    from aestream.app import check_device, open_model_store
    from aestream.training.build import train_bundle
    from aestream.training.datasets import read_segments, read_table
    from aestream.training.fit import progress_bars

    check_device(cfg.model.device)
    store = open_model_store(cfg)  # a model_dir that cannot be one fails now, not after the training
    if args.family:
        cfg = cfg.replace(model={"family": args.family})
    frame = read_table(args.input, args.sep)
    segments = read_segments(frame, cfg.stream.channels, *_columns(frame, args), cfg.stream.max_gap_ms)
    with progress_bars():  # on stderr, when it is a terminal
        bundle = train_bundle(segments, cfg.stream, cfg.model, cfg.threshold, info={"trained_on": str(args.input)})
    version = store.publish(bundle)
    print(json.dumps({"version": version, "family": bundle.family, "threshold": bundle.threshold,
                      "store": str(store)}))
    if held := store.held():
        log.warning("a rollback holds %s in service: %s serves after `aestream models resume` and the next "
                    "publish, or `aestream models rollback %s`", held, version, version)
    return 0


def _cmd_simulate(cfg: Config, args: argparse.Namespace) -> int:
    import numpy as np

    from aestream.app import check_kafka
    from aestream.commands.simulate import KINDS, Plant, batches, encode_batch
    from aestream.kafka.kafka_python import KafkaSink
    from aestream.stream.codec import encode_reading
    from aestream.stream.messages import Outgoing

    check_kafka(cfg.kafka)
    plant = Plant(args.sensors, cfg.stream.channels, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    length = max(cfg.stream.window_size * 2, 30)
    # after each sensor's calibration (its baseline learns from its first readings, which must be normal)
    first = length + (cfg.baselines.n_readings * cfg.stream.stride if cfg.baselines.mode != "off" else 0)
    if args.anomalies and args.steps < first + 2 * length:
        raise AestreamError(f"--steps {args.steps} leaves no room for anomalies after the sensors' calibration "
                            f"({cfg.baselines.n_readings} readings, baselines.n_readings): use --steps "
                            f"{first + 2 * length} or more")
    plan = [(int(rng.integers(args.sensors)), KINDS[i % len(KINDS)],
             int(rng.integers(first, max(args.steps - 2 * length, first + 1))), length)
            for i in range(args.anomalies)]
    start_ms = int(time.time() * 1000) - args.steps * plant.period_ms
    readings = plant.readings(args.steps, start_ms, plan)
    sink = KafkaSink(cfg.kafka)
    topic = cfg.kafka.input_topics[0]
    t0 = time.monotonic()
    sent = 0
    for sensor, chunk in batches(readings, args.batch):  # one sensor a message, keyed by it: its partition
        value = encode_reading(*chunk[0]) if args.batch == 1 else encode_batch(sensor, chunk)
        sink.send(Outgoing(topic, value, sensor.encode()))
        sent += len(chunk)
        if args.rate > 0:
            time.sleep(max(0.0, t0 + sent / args.rate - time.monotonic()))
    sink.flush()
    sink.close()
    truth = [inj.to_dict() for inj in plant.injected]
    for inj in truth:
        print(json.dumps(inj))
    if args.truth:
        Path(args.truth).write_text(json.dumps(truth, indent=2))
    log.info("published %d readings to %s", len(readings), topic)
    return 0


def _cmd_demo(cfg: Config, args: argparse.Namespace) -> int:
    from aestream.commands.demo import run_demo

    # the demo's output is its story: kafka-python's warnings (a slow task in its event loop, a consumer without a
    # group, a metadata refresh while the demo's clients close) are not part of it; its errors still are
    kafka_log = logging.getLogger("kafka")
    kafka_log.setLevel(max(logging.ERROR, kafka_log.getEffectiveLevel()))
    result = run_demo(cfg, n_sensors=args.sensors, seed=args.seed)
    return 0 if result.detected == result.injected else 1


def _cmd_models(cfg: Config, args: argparse.Namespace) -> int:
    from aestream.app import open_model_store

    store = open_model_store(cfg)
    if args.models_command == "list":
        cur, held = store.current(), store.held()
        for v in store.versions():
            mark, note = "*" if v == cur else " ", "  (held by a rollback)" if v == held else ""
            try:  # one damaged version is a line of its own: the others, the served one too, still show
                info = store.meta(v)
                line = (f"{info['family']:<12} threshold {info['threshold']:.4g}  "
                        f"created {info['info'].get('created_at', '?')}")
            except (BundleError, KeyError, TypeError, ValueError) as e:
                line = f"unreadable: {e}"
            print(f"{mark} {v}  {line}{note}")
        if not store.versions():
            print(f"no versions in {store}")
    elif args.models_command == "show":
        bundle = store.load(args.version)
        print(json.dumps(store.meta(bundle.version), indent=2))
    elif args.models_command == "resume":
        held = store.resume()
        print(f"{held} serves; retraining publishes again" if held else "no rollback holds a version")
    else:
        print(f"current version is now {store.rollback(args.version)}")
    return 0


def _cmd_evaluate(cfg: Config, args: argparse.Namespace) -> int:
    from aestream.app import check_device
    from aestream.commands.evaluate.skab import run_skab

    check_device(cfg.model.device)
    if args.baselines:
        cfg = cfg.replace(baselines={"mode": args.baselines})
    result: dict[str, Any] = run_skab(args.path, cfg, stream=args.stream, train_file=args.train,
                                      plot_dir=args.plot, predictions_dir=args.predictions)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            if k != "files":
                print(f"{k:>14}: {v}")
    return 0


def _cmd_decode(cfg: Config, args: argparse.Namespace) -> int:
    from aestream.app import check_kafka, open_model_store
    from aestream.kafka.kafka_python import tail_topic
    from aestream.outputs.streams import decode_latent, decode_window

    check_kafka(cfg.kafka)
    topic = args.topic or cfg.streams.latent_topic
    if not topic:
        raise AestreamError("no latent topic: pass --topic or set streams.latent_topic")
    store = open_model_store(cfg)
    scorers: dict[str, Any] = {}  # each version's scorer, None for one the store cannot load
    for code in tail_topic(cfg.kafka, topic, timeout_s=math.inf, decode=decode_latent, idle_s=args.idle_s):
        if code.model_version not in scorers:
            try:
                scorers[code.model_version] = store.load(code.model_version).scorer
            except BundleError as e:  # pruned since (the store keeps the newest few), or damaged: the rest decode
                log.warning("the records of model %s are skipped: %s", code.model_version, e)
                scorers[code.model_version] = None
        scorer = scorers[code.model_version]
        if scorer is None:
            continue
        window = decode_window(code, scorer)  # AEL3: within half a step of the readings, so printed unrounded
        print(json.dumps({"sensor": code.sensor, "window_end_ms": code.window_end_ms,
                          "model_version": code.model_version, "values": window.tolist()}))
    return 0


def _columns(frame: Any, args: argparse.Namespace) -> tuple[str, str]:
    """``--ts-column`` and ``--sensor-column``: a name given must be a column of the file (a typo would merge every
    sensor's readings into one stream); without one, ``ts`` and ``sensor`` are used where the file has them."""
    for flag, name in (("--ts-column", args.ts_column), ("--sensor-column", args.sensor_column)):
        if name is not None and name not in frame.columns:
            raise AestreamError(f"{flag} {name!r} is not a column of {args.input}; it has {list(frame.columns)}: "
                                f"name one of them, or leave {flag} out")
    return args.ts_column or "ts", args.sensor_column or "sensor"


def _not_a_folder(out: str) -> None:
    """Refuse an ``--out`` that names a folder before the work, not after it."""
    if Path(out).is_dir():
        raise AestreamError(f"--out {out} is a folder: give a file name in it")


def _cmd_embed(cfg: Config, args: argparse.Namespace) -> int:
    from aestream.app import open_model_store
    from aestream.commands.embed import embed_frame
    from aestream.training.datasets import read_table

    _not_a_folder(args.out)
    bundle = open_model_store(cfg).load(args.version)
    table = read_table(args.input, args.sep)
    frame = embed_frame(table, bundle, cfg.stream.stride, *_columns(table, args), stride_ms=cfg.stream.stride_ms,
                        max_gap_ms=cfg.stream.max_gap_ms)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(args.out, index=False)
    print(json.dumps({"windows": len(frame), "latent_size": bundle.scorer.model.latent_size, "out": args.out}))
    return 0


def _cmd_report(cfg: Config, args: argparse.Namespace) -> int:
    from aestream.commands.report import read_events, write_report

    out = args.out or ("report.png" if args.png else "report.html")
    _not_a_folder(out)
    if args.events:
        docs = read_events(args.events)
    else:
        from aestream.app import check_kafka
        from aestream.kafka.kafka_python import tail_topic

        check_kafka(cfg.kafka)
        docs = list(tail_topic(cfg.kafka, args.topic, timeout_s=args.timeout_s))
        if not docs:
            log.warning("no documents in topic %s: read from its beginning until a poll came back empty (or "
                        "--timeout-s %g s)", args.topic, args.timeout_s)
    print(write_report(docs, out, png=args.png, top_n=args.top, max_sensors=args.max_sensors))
    return 0


_COMMANDS = {
    "run": _cmd_run,
    "train": _cmd_train,
    "simulate": _cmd_simulate,
    "demo": _cmd_demo,
    "models": _cmd_models,
    "evaluate": _cmd_evaluate,
    "decode": _cmd_decode,
    "retrain": _cmd_retrain,
    "trainer": _cmd_trainer,
    "report": _cmd_report,
    "embed": _cmd_embed,
}


if __name__ == "__main__":
    raise SystemExit(main())
