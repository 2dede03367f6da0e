"""A synthetic plant: several sensors with periodic, correlated, noisy channels and anomalies injected at known
times. Pure and seeded; the CLI publishes its readings to Kafka.

Each sensor is one of a fleet of like machines, with its own phase and a level near the fleet's: a slow
cycle drives every channel (with channel-specific gains and lags), plus gaussian noise. An injected anomaly is one of

* ``shift``: a sustained offset of several noise widths on one or two channels,
* ``decouple``: one channel stops following the cycle (it freezes at its value),
* ``oscillation``: a fast oscillation (period :data:`OSCILLATION_PERIOD` readings) appears on one channel.

>>> plant = Plant(n_sensors=2, channels=("a", "b"), seed=1)
>>> data = plant.readings(n_steps=5, start_ms=1_767_225_600_000)
>>> len(data), data[0][0], data[0][1]
(10, 'sensor-00', 1767225600000)

Batched for Kafka, a message holds one sensor's next readings (keyed by that sensor, so they stay on its partition
and in order):

>>> [(sensor, chunk[0][1] - 1_767_225_600_000, len(chunk)) for sensor, chunk in batches(data, 3)]
[('sensor-00', 0, 3), ('sensor-01', 0, 3), ('sensor-00', 3000, 2), ('sensor-01', 3000, 2)]
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["KINDS", "OSCILLATION_PERIOD", "Injected", "Plant", "batches", "encode_batch"]

Reading = tuple[str, int, list[float]]

KINDS = ("shift", "decouple", "oscillation")
# Six times faster than the plant's cycle. Not 5: a trailing mean of 5 readings (the shipped model.input_smoothing)
# averages a period-5 oscillation away entirely, and one of 10 keeps 65 % of its amplitude.
OSCILLATION_PERIOD = 10.0


@dataclass(frozen=True)
class Injected:
    """An anomaly injected into ``sensor`` over event time ``[start_ms, end_ms]``."""

    sensor: str
    kind: str
    start_ms: int
    end_ms: int
    channels: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {"sensor": self.sensor, "kind": self.kind, "start_ms": self.start_ms, "end_ms": self.end_ms,
                "channels": list(self.channels)}


class Plant:
    """``n_sensors`` sensors named ``sensor-00``…, each reading ``channels`` every ``period_ms``."""

    def __init__(
        self,
        n_sensors: int,
        channels: Sequence[str],
        seed: int = 0,
        period_ms: int = 1000,
        cycle_steps: float = 60.0,
        noise: float = 0.05,
        prefix: str = "sensor",
    ) -> None:
        self.channels = tuple(channels)
        self.sensors = [f"{prefix}-{i:02d}" for i in range(n_sensors)]
        self.period_ms = period_ms
        self.cycle_steps = cycle_steps
        self.noise = noise
        rng = np.random.default_rng(seed)
        c = len(self.channels)
        self._rng = rng
        self._phase = rng.uniform(0, 2 * np.pi, n_sensors)
        # A fleet of like machines: each channel has one operating level, each sensor a small offset from it.
        self._level = rng.uniform(10, 100, c) * rng.uniform(0.98, 1.02, (n_sensors, c))
        self._gain = rng.uniform(0.5, 2.0, c) * np.where(rng.random(c) < 0.5, -1, 1)
        self._lag = rng.uniform(0, np.pi / 2, c)
        self._scale = self._level * 0.05
        self.injected: list[Injected] = []

    def signal(self, n_steps: int, step0: int = 0) -> np.ndarray:
        """Clean-plus-noise values ``(n_sensors, n_steps, n_channels)`` for steps ``step0 … step0+n_steps-1``."""
        t = np.arange(step0, step0 + n_steps)[None, :, None]
        theta = 2 * np.pi * t / self.cycle_steps + self._phase[:, None, None]
        cycle = np.sin(theta - self._lag) + 0.3 * np.sin(2 * theta)
        clean = self._level[:, None, :] + self._scale[:, None, :] * self._gain * cycle
        noise = self._rng.standard_normal(clean.shape) * self.noise * self._scale[:, None, :]
        return clean + noise

    def inject(self, values: np.ndarray, sensor: int, kind: str, start: int, length: int, start_ms: int,
               step0: int = 0) -> Injected:
        """Plant an anomaly in ``values`` (as returned by :meth:`signal`) in place; records and returns it."""
        if kind not in KINDS:
            raise ValueError(f"unknown anomaly kind {kind!r}: use one of {', '.join(KINDS)}")
        c = len(self.channels)
        picks = self._rng.choice(c, size=min(2 if kind == "shift" else 1, c), replace=False)
        seg = slice(start - step0, start - step0 + length)
        scale = self._scale[sensor, picks]
        series = values[sensor]  # (T, C) view
        if kind == "shift":
            series[seg, picks] += 1.5 * scale * np.abs(self._gain[picks])
        elif kind == "decouple":
            series[seg, picks] = series[start - step0, picks]
        else:
            k = np.arange(length)[:, None]
            series[seg, picks] += 1.2 * scale * np.sin(2 * np.pi * k / OSCILLATION_PERIOD)
        inj = Injected(self.sensors[sensor], kind, start_ms + start * self.period_ms,
                       start_ms + (start + length - 1) * self.period_ms, tuple(self.channels[i] for i in picks))
        self.injected.append(inj)
        return inj

    def readings(
        self,
        n_steps: int,
        start_ms: int,
        anomalies: Sequence[tuple[int, str, int, int]] = (),
        step0: int = 0,
    ) -> list[Reading]:
        """Readings ``(sensor, ts_ms, values)`` in event-time order, with ``anomalies`` given as
        ``(sensor index, kind, start step, length)`` planted."""
        values = self.signal(n_steps, step0)
        for sensor, kind, start, length in anomalies:
            self.inject(values, sensor, kind, start, length, start_ms, step0)
        out = []
        for step in range(n_steps):
            ts = start_ms + (step0 + step) * self.period_ms
            for i, s in enumerate(self.sensors):
                out.append((s, ts, [round(float(v), 5) for v in values[i, step]]))
        return out


def batches(readings: Sequence[Reading], size: int) -> Iterator[tuple[str, list[Reading]]]:
    """``readings`` (in event-time order, sensors interleaved) as batches of up to ``size`` readings of one
    sensor each, with that sensor: a batch goes out when its sensor's ``size``-th reading comes, the
    unfilled rest at the end in the order of their first readings. Each sensor's readings keep their order
    across its batches, and the batches follow the readings' order as closely as ``size`` allows."""
    pending: dict[str, list[Reading]] = {}
    for reading in readings:
        chunk = pending.setdefault(reading[0], [])
        chunk.append(reading)
        if len(chunk) == size:
            yield reading[0], pending.pop(reading[0])
    yield from pending.items()  # a dict keeps the order the sensors' pending batches began in


def encode_batch(sensor: str, chunk: Sequence[Reading]) -> bytes:
    """One sensor's readings in the columnar batched form (docs/formats.md), the fastest for the worker to decode.

    >>> encode_batch("s1", [("s1", 1767225600000, [1.0, 2.5]), ("s1", 1767225601000, [1.5, 2.0])])
    b'{"sensor":"s1","ts":[1767225600000,1767225601000],"values":[[1.0,2.5],[1.5,2.0]]}'
    """
    return json.dumps({"sensor": sensor, "ts": [ts for _, ts, _ in chunk], "values": [v for _, _, v in chunk]},
                      separators=(",", ":")).encode()
