"""Soak: a worker kill -9-ed at random points under load, N times, on a private broker; prints one JSON line.

    python benchmarks/soak.py [--cycles 20] [--sensors 8] [--steps 15000] [--rate 400] [--poison-every 100]

Readings of a simulated plant (anomalies injected) are produced at ``--rate`` messages/s, with one malformed
message every ``--poison-every``; the worker (``aestream run`` as a subprocess) is killed with SIGKILL at a
random moment after it has committed progress, and restarted, ``--cycles`` times; a last worker drains the topic
and is stopped with SIGTERM. The model is a real trained autoencoder with its threshold set to 1e-9 so that every
window is reported: the output then accounts for every reading.

Figures: ``messages`` produced; ``anomalies_injected`` / ``anomalies_detected`` (a reported window over the
calibrated threshold overlaps it); ``duplicate_ids`` — windows reported under more than one event id (must be 0;
re-reported windows with the same id are counted in ``duplicate_events``); ``messages_skipped`` — input
messages beyond the committed offsets plus readings in no reported window plus malformed messages never
dead-lettered (must be 0); ``dead_lettered`` (distinct source offsets); ``peak_rss_bytes`` of any worker.
Exits 1 if anything was skipped or a window got two ids.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "faults"))
sys.path.insert(0, str(ROOT))

import faultkit  # noqa: E402

from aestream.config import Config  # noqa: E402
from aestream.kafka.kafka_python import ensure_topics  # noqa: E402
from aestream.models.store import ModelStore  # noqa: E402

POISON = [b"\xff not json", b'{"sensor": "p", "ts": 1, "values": [1, 2, 3, 4]}', b'{"sensor": 7}', b"[]",
          b'{"sensor": "p", "ts": 1767225600000, "values": [1, NaN, 3, 4]}']


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
    ap.add_argument("--bootstrap", default=os.environ.get("AESTREAM_TEST_BOOTSTRAP"),
                    help="use this broker (default: start a private one)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    work = Path(tempfile.mkdtemp(prefix="aestream-soak-"))
    broker = None
    if not args.bootstrap:
        broker = faultkit.Broker(work / "kafka")
        broker.workdir.mkdir()
        broker.start()
    bootstrap = args.bootstrap or broker.bootstrap  # type: ignore[union-attr]
    t0 = time.monotonic()
    try:
        run = f"soak-{int(time.time())}"
        cfg = Config().replace(
            kafka={"bootstrap_servers": (bootstrap,), "group_id": f"g-{run}", "input_topics": (f"in-{run}",),
                   "output_topic": f"out-{run}", "dead_letter_topic": f"dlq-{run}", "session_timeout_ms": 6000,
                   "heartbeat_interval_ms": 1000, "poll_timeout_ms": 100, "max_poll_records": 200,
                   "rebuild_lookback_messages": 400},
            stream={"channels": faultkit.CHANNELS, "window_size": 16, "stride": 1, "stride_ms": 4000},
            paths={"model_dir": str(work / "models"), "state_dir": str(work / "state")})
        k = cfg.kafka
        ensure_topics(k, {k.input_topics[0]: args.partitions, k.output_topic: 1, k.dead_letter_topic: 1})
        bundle, calibrated = faultkit.trained_bundle(cfg, n_sensors=args.sensors)
        ModelStore(cfg.paths.model_dir).publish(bundle)
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
        verdict = faultkit.audit(bootstrap, cfg, stream, calibrated)
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
            "windows_reported": verdict.events - verdict.duplicate_events, "last_exit_code": report.exit_code,
            "seconds": round(time.monotonic() - t0, 1),
        }
        print(json.dumps(line), flush=True)
        ok = not (skipped or verdict.conflicting_ids or verdict.off_phase or verdict.windows_off_grid)
        return 0 if ok and report.exit_code == 0 else 1
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    raise SystemExit(main())
