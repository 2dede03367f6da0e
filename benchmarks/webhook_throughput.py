"""Worker throughput with failing webhooks vs none, measured in the same run; prints one JSON line.

    python benchmarks/webhook_throughput.py

The same 24-sensor stream (every sensor anomalous for a while, so every sensor opens episodes routed to the
webhooks) goes through ``Worker.process`` three times without webhooks and three times with two failing ones —
one answering HTTP 500, one that hangs — in ABBA order, so a drift of the machine cancels out. Kafka is left
out (an in-memory source and sink) so the figure isolates what the webhooks cost the loop: delivery runs on
background threads and must cost nothing.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aestream.alerts import build_alert_stage
from aestream.commands.simulate import Plant
from aestream.config import Config
from aestream.stream.codec import encode_reading
from aestream.stream.messages import Record
from aestream.training.build import train_bundle
from aestream.worker import Worker

CHANNELS = ("temperature", "pressure", "vibration", "current")
START_MS = 1_767_225_600_000


class _Sink:
    def send(self, msg: Any) -> None: ...
    def flush(self, timeout_s: float = 0.0) -> None: ...
    def close(self, timeout_s: float = 0.0) -> None: ...
    def poll(self, *a: Any, **k: Any) -> list[Record]:
        return []
    def commit(self, offsets: Any, metadata: Any = None) -> bool:
        return True


class _Store:
    def __init__(self, bundle: Any) -> None:
        self.bundle = bundle

    def current(self) -> str:
        return "v0001"

    def load(self, version: str | None = None, device: str = "cpu") -> Any:
        return self.bundle


def _server(mode: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if mode == "hang":
                time.sleep(5)
            self.send_response(500)
            self.end_headers()

        def log_message(self, *args: Any) -> None: ...

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def main() -> None:
    scratch = tempfile.TemporaryDirectory(prefix="aestream-webhook-bench-")  # removed at exit, even on an error
    tmp = scratch.name
    base = Config().replace(stream={"channels": CHANNELS, "window_size": 16, "stride": 4},
                            model={"family": "vanilla", "epochs": 10, "device": "cpu", "torch_threads": 1,
                                   "detrend_channels": ()},  # the shipped ones are SKAB's
                            threshold={"k": 2, "n": 3}, paths={"state_dir": tmp})
    plant = Plant(24, CHANNELS, seed=0, prefix="pump")
    bundle = train_bundle(list(plant.signal(800)), base.stream, base.model, base.threshold)
    bundle.version = "v0001"
    values = plant.signal(800, 800)
    values[:, 100:200] += 50.0
    records = []
    for step in range(800):
        for i, s in enumerate(plant.sensors):
            value = encode_reading(s, START_MS + (800 + step) * 1000, values[i, step].round(5).tolist())
            records.append(Record("in", 0, len(records), s.encode(), value, 0))
    err, hang = _server("err"), _server("hang")
    common = {"enabled": True, "topic": "alerts", "bands": {"warning": 1.0, "critical": 1000.0}}
    hooks = {"err": {"type": "webhook", "url": f"http://127.0.0.1:{err.server_port}/", "retries": 2,
                     "backoff_s": 0.02},
             "hang": {"type": "webhook", "url": f"http://127.0.0.1:{hang.server_port}/", "timeout_s": 0.2,
                      "retries": 1, "backoff_s": 0.02, "queue_size": 4}}
    configs = {"none": base.replace(alerts=common),
               "failing": base.replace(alerts={**common, "sinks": hooks, "routes": (
                   {"severity": "critical", "sensor": "pump-*", "sinks": ["topic", "err", "hang"]},)})}
    rates: dict[str, list[float]] = {"none": [], "failing": []}
    for kind in ("none", "failing", "failing", "none", "none", "failing"):  # ABBA order cancels drift
        cfg = configs[kind]
        stage = build_alert_stage(cfg)
        worker = Worker(cfg, _Sink(), _Sink(), _Store(bundle), stages=[stage] if stage else [])
        worker.refresh_model(force=True)
        t0 = time.perf_counter()
        for i in range(0, len(records), 2000):
            worker.process(records[i : i + 2000])
        rates[kind].append(len(records) / (time.perf_counter() - t0))
        if stage:
            stage.close(timeout_s=0.5)
    pairs = sorted(f / n for f, n in zip(rates["failing"], rates["none"]))
    print(json.dumps({"readings": len(records), "none_rps": [round(r) for r in rates["none"]],
                      "failing_rps": [round(r) for r in rates["failing"]],
                      "ratio_mean": round(sum(rates["failing"]) / sum(rates["none"]), 3),
                      "ratio_median_of_pairs": round(pairs[1], 3)}))
    err.shutdown()
    hang.shutdown()
    scratch.cleanup()


if __name__ == "__main__":
    main()
