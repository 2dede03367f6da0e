"""Soak: a worker kill -9-ed at random points under load, N times, on a private broker; prints one JSON line.

    python benchmarks/soak.py [--cycles 20] [--sensors 8] [--steps 15000] [--rate 400] [--poison-every 100]
                              [--retrain-interval 5]

Readings of a simulated plant (anomalies injected) are produced at ``--rate`` messages/s, with one malformed
message every ``--poison-every``; the worker (``aestream run`` as a subprocess) is killed with SIGKILL at a
random moment after it has committed progress, and restarted, ``--cycles`` times; a last worker drains the topic
and is stopped with SIGTERM. Alerts are on (state in the group's alerts changelog) and so is retraining in the
worker (``isolation = "process"``, every ``--retrain-interval`` seconds once the reservoir, saved every 2 s and fed
one window per sensor per 10 s of event time, holds 50 windows), so the kills land in alert episodes and in
trainings too. The model is a real trained autoencoder with its calibrated
threshold and a rule of one window (``threshold.k = n = 1``). Its thresholds per sensor (``threshold.sensors``):

* the first half of the sensors are judged against a millionth of a millionth of it, so that every window of
  theirs is reported: the output then accounts for every one of their readings, whatever model a retrain
  publishes. Their alert episodes open at their first window and never resolve.
* the other half are judged against the 97th percentile of the model's scores on the plant's normal windows (the
  calibrated threshold is ~4.5 times higher: with it only the injected anomalies alarm, 6 episodes in a 20-cycle
  run, which the kills rarely hit). False alarms then come every few dozen windows of a sensor; with
  a band between warning and critical (``major`` from 1.15 × the threshold) some of them escalate, and with
  ``alerts.cooldown_ms`` = 20 s (5 windows) episodes open, update, resolve and are suppressed all through the
  soak, so the kills land among their transitions.

Figures: ``messages`` produced; ``anomalies_injected`` / ``anomalies_detected`` (a reported window over the
calibrated threshold overlaps it); ``duplicate_ids`` — windows reported under more than one event id (must be 0;
re-reported windows with the same id are counted in ``duplicate_events``); ``messages_skipped`` — input
messages beyond the committed offsets plus readings of the every-window sensors in no reported window plus
malformed messages never dead-lettered (must be 0); ``dead_lettered`` (distinct source offsets);
``peak_rss_bytes`` of any worker; ``retrains``: the workers' retrain outcomes by status (published and rejected
ones trained a model); ``model_versions`` seen in the anomaly events.

Alerts, from the alert topic's episode events (``opened``, ``updated``, ``resolved``; ``faultkit.alert_audit``):
``alert_episodes``, ``alert_events`` (distinct, by type), ``alert_redelivered`` (copies of an event with the same
id, as at-least-once replays send them), ``alert_suppressed`` (windows in alarm within ``alerts.cooldown_ms`` after
an episode resolved: they open nothing, by design), and

* ``duplicate_opened`` — episodes opened twice: an episode id with more than one distinct ``opened`` event, or an
  episode opened while its sensor's previous episode (by opening window end) had no ``resolved`` event ending at
  or before its opening window (one incident reported as two). Must be 0.
* ``lost_alerts`` — episodes with ``updated`` or ``resolved`` events but no ``opened``, plus windows in alarm
  (every anomaly event: over the threshold or held by the k-of-n rule) whose end lies neither within an episode of
  their sensor (from its opening window end to its resolving window end, or on if it is open) nor within
  ``alerts.cooldown_ms`` after one resolved. Must be 0.

Exits 1 if anything was skipped, a window got two ids, an episode was opened twice or lost, or no retrain trained
a model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "faults"))
sys.path.insert(0, str(ROOT))

import faultkit  # noqa: E402
import numpy as np  # noqa: E402
from numpy.lib.stride_tricks import sliding_window_view  # noqa: E402

from aestream.commands.simulate import Plant  # noqa: E402
from aestream.config import Config  # noqa: E402
from aestream.kafka.kafka_python import ensure_topics  # noqa: E402
from aestream.models.store import ModelStore  # noqa: E402

EVERY_WINDOW = 1e-12  # threshold.sensors factor of the every-window sensors: a millionth of a millionth
ALERT_QUANTILE = 0.97  # the other sensors' threshold: this quantile of the scores of the plant's normal windows
POISON = [b"\xff not json", b'{"sensor": "p", "ts": 1, "values": [1, 2, 3, 4]}', b'{"sensor": 7}', b"[]",
          b'{"sensor": "p", "ts": 1767225600000, "values": [1, NaN, 3, 4]}']


def _normal_quantile(bundle: Any, cfg: Config, n_sensors: int, q: float) -> float:
    """The ``q`` quantile of ``bundle``'s scores on every window of the normal readings it was trained on."""
    w = cfg.stream.window_size
    normal = Plant(n_sensors, cfg.stream.channels, seed=0).signal(800)  # faultkit.trained_bundle's draw
    windows = np.concatenate([sliding_window_view(series, w, axis=0).transpose(0, 2, 1) for series in normal])
    return float(np.quantile(bundle.scorer.score(windows.astype(np.float32)).scores, q))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--sensors", type=int, default=8)
    ap.add_argument("--steps", type=int, default=15000,
                    help="readings per sensor (production must outlast the cycles)")
    ap.add_argument("--rate", type=float, default=400.0, help="messages per second")
    ap.add_argument("--anomalies", type=int, default=10)
    ap.add_argument("--poison-every", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--retrain-interval", type=float, default=5.0, help="retrain.interval_s of the workers")
    ap.add_argument("--bootstrap", default=os.environ.get("AESTREAM_TEST_BOOTSTRAP"),
                    help="use this broker (default: start a private one)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill, too, stops the broker and removes the folder
    work = Path(tempfile.mkdtemp(prefix="aestream-soak-"))
    broker = None
    try:  # from the broker's start: one that fails or is killed halfway is stopped and its folder removed too
        if not args.bootstrap:
            broker = faultkit.Broker(work / "kafka")
            broker.workdir.mkdir()
            broker.start()
        bootstrap = args.bootstrap or broker.bootstrap  # type: ignore[union-attr]
        t0 = time.monotonic()
        run = f"soak-{int(time.time())}"
        every_window = [f"sensor-{i:02d}" for i in range(args.sensors // 2)]  # faultkit's plant names them so
        cfg = Config().replace(
            kafka={"bootstrap_servers": (bootstrap,), "group_id": f"g-{run}", "input_topics": (f"in-{run}",),
                   "output_topic": f"out-{run}", "dead_letter_topic": f"dlq-{run}", "session_timeout_ms": 6000,
                   "heartbeat_interval_ms": 1000, "poll_timeout_ms": 100, "max_poll_records": 200,
                   "rebuild_lookback_messages": 400},
            stream={"channels": faultkit.CHANNELS, "window_size": 16, "stride": 1, "stride_ms": 4000},
            paths={"model_dir": str(work / "models"), "state_dir": str(work / "state")},
            # what faultkit.trained_bundle trains, fewer epochs: what a retrain trains
            model={"family": "vanilla", "epochs": 10, "hidden_size": 32, "latent_size": 6, "torch_threads": 1,
                   "device": "cpu", "input_smoothing": 1, "detrend_channels": ()},
            baselines={"mode": "off"},  # judged by the model (and its threshold), not by a baseline of its own
            threshold={"k": 1, "n": 1},
            alerts={"enabled": True, "topic": f"alerts-{run}", "cooldown_ms": 20_000,
                    "bands": {"warning": 1.0, "major": 1.15, "critical": 2.0}},  # false alarms escalate too
            retrain={"enabled": True, "interval_s": args.retrain_interval, "sample_interval_s": 10.0,
                     "save_every_s": 2.0, "n_reservoir_windows": 2000, "n_min_windows": 50, "timeout_s": 120.0})
        k = cfg.kafka
        ensure_topics(k, {k.input_topics[0]: args.partitions, k.output_topic: 1, k.dead_letter_topic: 1})
        bundle, calibrated = faultkit.trained_bundle(cfg, n_sensors=args.sensors)
        bundle.threshold = calibrated
        ModelStore(cfg.paths.model_dir).publish(bundle)
        sensitive = _normal_quantile(bundle, cfg, args.sensors, ALERT_QUANTILE) / calibrated
        cfg = cfg.replace(threshold={"sensors": {f"sensor-{i:02d}": EVERY_WINDOW if i < args.sensors // 2
                                                 else sensitive for i in range(args.sensors)}})
        stream = faultkit.plant_stream(cfg, args.sensors, args.steps, args.anomalies, seed=args.seed)
        n_poison = 0
        if args.poison_every:
            mixed = []
            for i, m in enumerate(stream.messages):
                mixed.append(m)
                if i % args.poison_every == args.poison_every - 1:
                    mixed.append((m[0], POISON[n_poison % len(POISON)]))
                    n_poison += 1
            stream.messages = mixed
        report = faultkit.kill9_cycles(bootstrap, cfg, faultkit.write_config(cfg, work / "worker.toml"), work,
                                       stream, args.cycles, args.rate, seed=args.seed, timeout_s=1800)
        verdict = faultkit.audit(bootstrap, cfg, stream, calibrated, every_window)
        anomalies = [json.loads(m.value) for m in faultkit.read_topic(bootstrap, k.output_topic)]
        alerts = faultkit.alert_audit([json.loads(m.value) for m in faultkit.read_topic(bootstrap, cfg.alerts.topic)],
                                      anomalies, cfg.alerts.cooldown_ms)
        retrains: dict[str, int] = {}
        for text in report.logs:
            for status in re.findall(r" retrain (published|rejected|failed|skipped): ", text):
                retrains[status] = retrains.get(status, 0) + 1
        dead = {(dict(m.headers)["aestream.source.partition"], dict(m.headers)["aestream.source.offset"])
                for m in faultkit.read_topic(bootstrap, k.dead_letter_topic)}
        skipped = verdict.skipped + len(verdict.readings_uncovered) + max(n_poison - len(dead), 0)
        line = {
            "cycles": report.cycles, "messages": verdict.messages, "anomalies_injected": verdict.anomalies_injected,
            "anomalies_detected": verdict.anomalies_detected, "duplicate_ids": len(verdict.conflicting_ids),
            "duplicate_events": verdict.duplicate_events, "off_phase_windows": verdict.off_phase,
            "off_grid_windows": verdict.windows_off_grid,
            "messages_skipped": skipped,
            "dead_lettered": len(dead), "malformed_sent": n_poison, "peak_rss_bytes": report.peak_rss_bytes,
            "windows_reported": verdict.events - verdict.duplicate_events,
            "alert_episodes": alerts.episodes, "alert_events": alerts.by_type, "alert_redelivered": alerts.redelivered,
            "alert_suppressed": alerts.suppressed, "duplicate_opened": len(alerts.duplicate_opened),
            "lost_alerts": alerts.lost, "retrains": retrains, "model_versions": sorted(verdict.versions),
            "last_exit_code": report.exit_code, "seconds": round(time.monotonic() - t0, 1),
        }
        print(json.dumps(line), flush=True)
        for name, found in (("opened twice", alerts.duplicate_opened), ("orphaned", alerts.orphaned),
                            ("windows in alarm in no episode", alerts.unattached)):
            if found:
                print(f"{name}: {found[:10]}", file=sys.stderr)
        trained = retrains.get("published", 0) + retrains.get("rejected", 0)
        ok = not (skipped or verdict.conflicting_ids or verdict.off_phase or verdict.windows_off_grid
                  or alerts.duplicate_opened or alerts.lost or not trained)
        return 0 if ok and report.exit_code == 0 else 1
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
