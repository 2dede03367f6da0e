"""The peer: aestream's job written with Quix Streams, for ``throughput.py`` to run against the same broker.

    python benchmarks/peer_quix.py --bootstrap HOST:PORT --input T --output T --model-dir DIR --group G
                                   [--messages N --readings-per-message R] [--idle-s S]

The job a user would write without aestream, the way the Quix Streams documentation shows it: an ``Application``,
a ``StreamingDataFrame`` over the JSON readings (a batched or columnar message expanded into its readings), a
count-based hopping window per message key (the sensor) that collects ``window_size`` readings every ``stride``
readings in the window's state store (RocksDB with its changelog topic, the library's defaults), each window scored
by the same model bundle's ``Scorer``, the same k-of-n alarm rule kept in the key's state, and the same anomaly
event (``aestream.stream.events.anomaly_event``) produced to the output topic, stamped with the time it is
produced. At-least-once, the library's default commit interval; torch on one thread, as the shipped config has it
(scoring one window at a time on two threads costs ~1 ms a window in thread wake-ups on a busy machine).

With ``--messages``, it stops once that many input messages are processed and prints one JSON line with the
readings/s from the first processed message on; with ``--idle-s``, it stops after that long without a message.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import quixstreams
import torch
from quixstreams import Application, State, message_context

from aestream.models.store import ModelStore
from aestream.stream.events import anomaly_event


def _readings(doc: Any) -> list[dict[str, Any]]:
    """One message → its readings: a reading, an array of readings, or one sensor's columns."""
    if isinstance(doc, list):
        return doc
    if isinstance(doc["ts"], list):
        return [{"sensor": doc["sensor"], "ts": t, "values": v} for t, v in zip(doc["ts"], doc["values"])]
    return [doc]


def build(app: Application, args: argparse.Namespace) -> None:
    bundle = ModelStore(args.model_dir).load()
    scorer, channels = bundle.scorer, bundle.channels
    k, n, smoothing = (int(bundle.alarm.get(name, 1)) for name in ("k", "n", "smoothing"))
    critical = float(bundle.alarm.get("critical_ratio", 2.0))

    def row(reading: dict[str, Any]) -> list[float]:
        v = reading["values"]
        return [v[c] for c in channels] if isinstance(v, dict) else v

    def score(window: dict[str, Any], state: State) -> dict[str, Any] | None:
        readings = window["value"]
        batch = scorer.score(np.asarray([[row(r) for r in readings]], dtype=np.float32))
        scores = [*state.get("scores", []), float(batch.scores[0])][-smoothing:]
        smoothed = sum(scores) / len(scores)
        flags = [*state.get("flags", []), smoothed > bundle.threshold][-n:]
        state.set("scores", scores)
        state.set("flags", flags)
        if sum(flags) < k:
            return None
        ctx = message_context()
        return anomaly_event(sensor=readings[-1]["sensor"], window_start_ms=readings[0]["ts"],
                             window_end_ms=readings[-1]["ts"], score=smoothed, threshold=bundle.threshold,
                             critical_ratio=critical, channels=channels, shares=batch.shares[0],
                             model_version=bundle.version, model_family=bundle.family,
                             source=(ctx.topic, ctx.partition, ctx.offset))

    sdf = app.dataframe(app.topic(args.input, value_deserializer="json"))
    sdf = sdf.apply(_readings, expand=True)
    sdf = sdf.hopping_count_window(count=bundle.window_size, step=args.stride).collect().final()
    sdf = sdf.apply(score, stateful=True).filter(lambda event: event is not None)
    sdf = sdf.set_timestamp(lambda value, key, timestamp, headers: int(time.time() * 1000))
    sdf.to_topic(app.topic(args.output, value_serializer="json"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--messages", type=int, default=0, help="stop after this many input messages")
    ap.add_argument("--readings-per-message", type=int, default=1)
    ap.add_argument("--idle-s", type=float, default=0.0, help="stop after this long without a message")
    ap.add_argument("--torch-threads", type=int, default=1, help="as the shipped config's model.torch_threads")
    args = ap.parse_args()
    torch.set_num_threads(args.torch_threads)  # one window at a time: a second thread only adds its wake-ups
    seen = {"messages": 0, "t0": 0.0, "t1": 0.0}

    def processed(topic: str, partition: int, offset: int) -> None:
        seen["messages"] += 1
        if seen["messages"] == 1:
            seen["t0"] = time.perf_counter()
        if seen["messages"] == args.messages:
            seen["t1"] = time.perf_counter()
            app.stop()

    app = Application(broker_address=args.bootstrap, consumer_group=args.group, auto_offset_reset="earliest",
                      state_dir=args.state_dir, loglevel="WARNING", on_message_processed=processed)
    build(app, args)
    app.run(timeout=args.idle_s)
    if args.messages:
        after_first = (seen["messages"] - 1) * args.readings_per_message
        print(json.dumps({"peer": "quixstreams", "version": quixstreams.__version__, "messages": seen["messages"],
                          "readings_per_s": after_first / max(seen["t1"] - seen["t0"], 1e-9)}), flush=True)


if __name__ == "__main__":
    main()
