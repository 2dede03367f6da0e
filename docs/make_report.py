"""Regenerate docs/report.png (the README's picture) and docs/sample-events.jsonl, without a broker.

A simulated plant of 6 sensors, a small vanilla autoencoder trained on its normal start, and the real worker
loop over an in-memory source. A stage taps every scored window as a ``score`` document so the picture shows
the whole score line; episodes are grouped from consecutive anomaly events of a sensor (as the alert router
does) so their spans are shaded.

    OMP_NUM_THREADS=1 .venv/bin/python docs/make_report.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from aestream.commands.report import write_report
from aestream.commands.simulate import Plant
from aestream.config import Config
from aestream.models.bundle import ModelBundle
from aestream.stream.codec import encode_reading
from aestream.stream.messages import Outgoing, Record
from aestream.stream.stages import Scored, Stage
from aestream.training.build import train_bundle
from aestream.worker import Worker

HERE = Path(__file__).resolve().parent
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
TRAIN_STEPS, STREAM_STEPS = 1200, 900
EPISODE_GAP_MS = 30_000


class _Source:
    def __init__(self, records: list[Record], batch: int = 500) -> None:
        self.records, self.batch = records, batch

    def poll(self, timeout_ms: int | None = None, max_records: int | None = None) -> list[Record]:
        out, self.records = self.records[: self.batch], self.records[self.batch :]
        return out

    def commit(self, offsets: dict[tuple[str, int], int]) -> bool:
        return True

    def close(self) -> None:
        pass


class _Sink:
    def send(self, msg: Outgoing) -> None:
        pass

    def flush(self, timeout_s: float = 60.0) -> None:
        pass

    def close(self, timeout_s: float = 10.0) -> None:
        pass


class _Models:
    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle

    def current(self) -> str | None:
        return self.bundle.version

    def load(self, version: str | None = None, device: str = "cpu") -> ModelBundle:
        return self.bundle


class _ScoreTap(Stage):
    """Every scored window as a ``score`` document."""

    def __init__(self) -> None:
        self.docs: list[dict[str, Any]] = []

    def on_scored(self, scored: list[Scored]) -> list[Outgoing]:
        self.docs += [{"type": "score", "sensor": s.window.sensor, "window_end_ms": s.window.end_ms,
                       "score": round(s.score, 6), "threshold": s.threshold} for s in scored if not s.replay]
        return []


def _episodes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    open_: dict[str, dict[str, Any]] = {}
    for e in sorted(events, key=lambda e: e["window_end_ms"]):
        ep = open_.get(e["sensor"])
        if ep is not None and e["window_end_ms"] - ep["last"] > EPISODE_GAP_MS:
            out.append({"type": "resolved", "episode_id": ep["id"], "sensor": e["sensor"], "window_end_ms": ep["last"]})
            ep = None
        if ep is None:
            ep = open_[e["sensor"]] = {"id": f"{e['sensor']}-{e['window_end_ms']}", "last": e["window_end_ms"]}
            out.append({"type": "opened", "episode_id": ep["id"], "sensor": e["sensor"],
                        "window_end_ms": e["window_end_ms"], "severity": e["severity"]})
        ep["last"] = e["window_end_ms"]
    out += [{"type": "resolved", "episode_id": ep["id"], "sensor": s, "window_end_ms": ep["last"]}
            for s, ep in open_.items()]
    return out


def main() -> int:
    cfg = Config().replace(model={"family": "vanilla", "epochs": 30, "hidden_size": 32, "latent_size": 6,
                                  "torch_threads": 1, "device": "cpu"},
                           threshold={"quantile": 0.999, "factor": 1.3, "k": 2, "n": 3},
                           baselines={"mode": "off"})  # one plant at one operating point: no calibration to wait
    plant = Plant(6, cfg.stream.channels, seed=7)
    t0 = time.monotonic()
    bundle = train_bundle(list(plant.signal(TRAIN_STEPS)), cfg.stream, cfg.model, cfg.threshold)
    bundle.version = "v0001"
    plan = [(0, "shift", TRAIN_STEPS + 150, 60), (2, "decouple", TRAIN_STEPS + 330, 80),
            (3, "oscillation", TRAIN_STEPS + 520, 60), (5, "shift", TRAIN_STEPS + 700, 70)]
    readings = plant.readings(STREAM_STEPS, START_MS, plan, step0=TRAIN_STEPS)
    records = [Record("readings", 0, i, s.encode(), encode_reading(s, ts, v), ts)
               for i, (s, ts, v) in enumerate(readings)]
    tap, events = _ScoreTap(), []
    worker = Worker(cfg, _Source(records), _Sink(), _Models(bundle), on_event=events.append, stages=[tap])
    worker.run(max_idle_s=0.0)
    docs = events + _episodes(events) + tap.docs
    (HERE / "sample-events.jsonl").write_text("".join(json.dumps(d) + "\n" for d in events + _episodes(events)))
    write_report(docs, HERE / "report.png", png=True, max_sensors=6, title="aestream sample report")
    print(f"{len(events)} events on {len({e['sensor'] for e in events})} sensors, {len(plant.injected)} injected; "
          f"{time.monotonic() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
