"""The worker builds a step's anomaly events together (``anomaly_events``): each must be the document
``anomaly_event`` makes for that window alone, field for field and in the same key order."""

from __future__ import annotations

import json

import numpy as np

from aestream.stream.events import anomaly_event, anomaly_events

CHANNELS = ("temperature", "pressure", "vibration", "current")


def test_a_batch_of_events_is_each_window_s_own_event() -> None:
    rng = np.random.default_rng(7)
    n = 2000
    scores = rng.lognormal(0.0, 1.0, n)
    thresholds = rng.uniform(0.5, 2.0, n)
    thresholds[:50] = scores[:50]  # at the threshold: "held", not "crossed"
    scores[50:100] = 2.0 * thresholds[50:100]  # at the critical ratio: "critical"
    thresholds[100:110] = 0.0  # a zero threshold: the ratio's floor
    shares = rng.dirichlet(np.ones(len(CHANNELS)), n)
    shares[110:130] = 0.25  # ties: channel order
    # at rounding halves, where numpy's rounding and Python's differ: 1.99995 a ratio (critical, or not?)
    thresholds[130:140], scores[130:140] = 1.0, [1.99995, 2.0000005, 1.0000005, 0.28675, 3.00005, 1.99995, 2.0,
                                                 0.99995, 1.00005, 2.00005]
    shares[140:150] = [0.28675, 0.11325, 0.3, 0.3]
    starts = np.arange(n, dtype=np.int64) * 1000 + 1_767_225_600_000
    sensors = [f"sensor-{i % 37:02d}" for i in range(n)]
    sources = [("in", i % 3, 10_000 + i) for i in range(n)]
    batch = anomaly_events(sensors=sensors, window_start_ms=starts.tolist(), window_end_ms=(starts + 3100).tolist(),
                           scores=scores, thresholds=thresholds, critical_ratio=2.0, channels=CHANNELS,
                           shares=shares, model_version="v0003", model_family="denoising", sources=sources)
    one_by_one = [anomaly_event(sensor=sensors[i], window_start_ms=int(starts[i]), window_end_ms=int(starts[i]) + 3100,
                                score=float(scores[i]), threshold=float(thresholds[i]), critical_ratio=2.0,
                                channels=CHANNELS, shares=shares[i], model_version="v0003",
                                model_family="denoising", source=sources[i]) for i in range(n)]
    assert [json.dumps(e) for e in batch] == [json.dumps(e) for e in one_by_one]
    assert {e["alarm"] for e in batch} == {"crossed", "held"}
    assert {e["severity"] for e in batch} == {"critical", "warning"}


def test_no_windows_no_events() -> None:
    assert anomaly_events(sensors=[], window_start_ms=[], window_end_ms=[], scores=np.empty(0),
                          thresholds=np.empty(0), critical_ratio=2.0, channels=CHANNELS,
                          shares=np.empty((0, len(CHANNELS))), model_version="v1", model_family="vanilla",
                          sources=[]) == []


def test_an_anomaly_event_carries_its_window_model_and_source_and_an_id_of_sensor_end_and_version() -> None:
    from aestream.stream.events import event_id

    e = anomaly_event(sensor="pump-7", window_start_ms=1_767_225_597_000, window_end_ms=1_767_225_600_000, score=0.9,
                      threshold=0.3, critical_ratio=2.0, channels=CHANNELS, shares=np.array([0.1, 0.2, 0.6, 0.1]),
                      model_version="v0003", model_family="denoising", source=("readings", 2, 41))
    assert e == {
        "schema": "aestream.event/1", "type": "anomaly", "event_id": "f0e28d90-4b8b-559f-bfc6-8c3a3cff5078",
        "sensor": "pump-7", "window_start_ms": 1_767_225_597_000, "window_end_ms": 1_767_225_600_000,
        "window_end": "2026-01-01T00:00:00.000Z", "score": 0.9, "threshold": 0.3, "ratio": 3.0, "alarm": "crossed",
        "severity": "critical", "channels": [{"name": "vibration", "share": 0.6}, {"name": "pressure", "share": 0.2},
                                             {"name": "temperature", "share": 0.1}],
        "model_version": "v0003", "model_family": "denoising",
        "source": {"topic": "readings", "partition": 2, "offset": 41}}
    assert e["event_id"] == event_id("pump-7", 1_767_225_600_000, "v0003")  # the same id in every release
    assert len({event_id("pump-7", 1_767_225_600_000, "v0003"), event_id("pump-8", 1_767_225_600_000, "v0003"),
                event_id("pump-7", 1_767_225_601_000, "v0003"), event_id("pump-7", 1_767_225_600_000, "v0004")}) == 4
