"""Beyond alerts: the denoised signal and the latent code of every scored window, as streams.

* **Denoised stream** (``streams.denoised_topic``): for each scored window, the reconstruction of the sensor's
  latest reading, in the input reading format plus ``"denoised": true`` and the model version — any consumer of
  readings can subscribe to it. A window the alarm rule flags passes the raw reading through with
  ``"denoised": false`` (an anomaly is never cleaned away), unless ``streams.denoise_anomalies = true``.
* **Latent stream** (``streams.latent_topic``): each window's latent code in a compact binary record
  (:func:`encode_latent`); ``aestream decode`` turns codes back into windows with the model version that made
  them.

Latent record layout (little-endian)::

    b"AEL1" | window_end_ms: int64 | n: uint16 | len(sensor): uint8 | sensor utf-8 | len(version): uint8
           | version utf-8 | n × float16 latent values

>>> rec = encode_latent("pump-7", 1767225600000, "v0003", np.array([0.5, -1.25], dtype=np.float32))
>>> code = decode_latent(rec)
>>> len(rec), code.sensor, code.window_end_ms, code.model_version, code.code.tolist()
(31, 'pump-7', 1767225600000, 'v0003', [0.5, -1.25])
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import orjson

from aestream.bundle import ModelBundle
from aestream.errors import AestreamError
from aestream.messages import Outgoing
from aestream.stages import Scored

__all__ = ["LatentCode", "StreamsStage", "decode_latent", "encode_latent"]

MAGIC = b"AEL1"
_HEAD = struct.Struct("<4sqH")


class LatentCode(NamedTuple):
    """One window's latent code and where it came from."""

    sensor: str
    window_end_ms: int
    model_version: str
    code: np.ndarray


def encode_latent(sensor: str, window_end_ms: int, model_version: str, code: np.ndarray) -> bytes:
    """The compact binary record of one latent code (float16 values)."""
    s, v = sensor.encode(), model_version.encode()
    if len(s) > 255 or len(v) > 255:
        raise AestreamError(f"sensor id or model version longer than 255 bytes: {sensor[:40]!r}, {model_version!r}")
    values = np.asarray(code, dtype="<f2")
    return (_HEAD.pack(MAGIC, window_end_ms, len(values)) + bytes([len(s)]) + s + bytes([len(v)]) + v
            + values.tobytes())


def decode_latent(data: bytes) -> LatentCode:
    """Parse a record made by :func:`encode_latent`; raises :class:`AestreamError` on anything else."""
    try:
        magic, end_ms, n = _HEAD.unpack_from(data)
        if magic != MAGIC:
            raise ValueError(f"magic {magic!r}")
        at = _HEAD.size
        ls = data[at]
        sensor = data[at + 1 : at + 1 + ls].decode()
        at += 1 + ls
        lv = data[at]
        version = data[at + 1 : at + 1 + lv].decode()
        at += 1 + lv
        if len(data) != at + 2 * n:
            raise ValueError(f"{len(data)} bytes, expected {at + 2 * n}")
        code = np.frombuffer(data, dtype="<f2", count=n, offset=at).astype(np.float32)
    except (ValueError, IndexError, struct.error, UnicodeDecodeError) as e:
        raise AestreamError(f"not an aestream latent record ({e}): is this the streams.latent_topic?") from None
    return LatentCode(sensor, end_ms, version, code)


class StreamsStage:
    """A worker stage that emits the denoised and latent streams for every freshly scored window."""

    def __init__(
        self,
        bundle: Callable[[], ModelBundle | None],
        channels: tuple[str, ...],
        denoised_topic: str = "",
        latent_topic: str = "",
        denoise_anomalies: bool = False,
    ) -> None:
        self.bundle = bundle
        self.channels = channels
        self.denoised_topic = denoised_topic
        self.latent_topic = latent_topic
        self.denoise_anomalies = denoise_anomalies

    def on_tick(self, now: float) -> list[Outgoing]:
        return []

    def on_scored(self, scored: list[Scored]) -> list[Outgoing]:
        fresh = [s for s in scored if not s.replay]
        b = self.bundle()
        if not fresh or b is None or not (self.denoised_topic or self.latent_topic):
            return []
        windows = np.stack([s.window.values for s in fresh])
        out: list[Outgoing] = []
        if self.denoised_topic:
            latest = b.scorer.reconstruct(windows)[:, -1, :]
            for s, clean in zip(fresh, latest):
                passthrough = s.alarm and not self.denoise_anomalies
                values = s.window.values[-1] if passthrough else clean
                doc = {"sensor": s.window.sensor, "ts": s.window.end_ms,
                       "values": [round(float(v), 6) for v in values], "denoised": not passthrough,
                       "model_version": s.model_version}
                out.append(Outgoing(self.denoised_topic, orjson.dumps(doc), s.window.sensor.encode()))
        if self.latent_topic:
            codes = b.scorer.encode(windows)
            for s, code in zip(fresh, codes):
                out.append(Outgoing(self.latent_topic, encode_latent(s.window.sensor, s.window.end_ms,
                                                                     s.model_version, code),
                                    s.window.sensor.encode()))
        return out
