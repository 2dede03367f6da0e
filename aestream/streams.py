"""Beyond alerts: the denoised signal and the latent code of every scored window, as streams.

* **Denoised stream** (``streams.denoised_topic``): for each scored window, the reconstruction of the sensor's
  latest reading, in the input reading format plus ``"denoised": true`` and the model version — any consumer of
  readings can subscribe to it. A window the alarm rule flags passes the raw reading through with
  ``"denoised": false`` (an anomaly is never cleaned away), unless ``streams.denoise_anomalies = true``.
* **Latent stream** (``streams.latent_topic``): each window's latent code in a compact binary record
  (:func:`encode_latent`), with the window's level on each channel the model detrends (the encoder sees those
  channels without their level); ``aestream decode`` turns codes back into the scored windows with the model
  version that made them.

Latent record layout (little-endian)::

    b"AEL1" | window_end_ms: int64 | n: uint16 | len(sensor): uint8 | sensor utf-8 | len(version): uint8
           | version utf-8 | n × float16 latent values
    b"AEL2" | the same fields as AEL1 | m: uint8 | m × float32 levels

An ``AEL2`` record is written when the model detrends ``m`` > 0 channels: the levels are the window's mean of
each of them in the readings' own units, in the model's channel order (float32: float16 cannot hold a level of
10000 to better than 8). A model that detrends nothing writes ``AEL1``, which reads back with no levels.

>>> rec = encode_latent("pump-7", 1767225600000, "v0003", np.array([0.5, -1.25], dtype=np.float32))
>>> code = decode_latent(rec)
>>> len(rec), code.sensor, code.window_end_ms, code.model_version, code.code.tolist(), code.levels.tolist()
(31, 'pump-7', 1767225600000, 'v0003', [0.5, -1.25], [])
>>> rec = encode_latent("pump-7", 1767225600000, "v0003", np.array([0.5, -1.25]), levels=np.array([10000.25]))
>>> len(rec), rec[:4], decode_latent(rec).levels.tolist()
(36, b'AEL2', [10000.25])
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
MAGIC_LEVELS = b"AEL2"
_HEAD = struct.Struct("<4sqH")
_NO_LEVELS = np.zeros(0, dtype=np.float32)
_NO_LEVELS.flags.writeable = False


class LatentCode(NamedTuple):
    """One window's latent code, its levels on the detrended channels (empty when none) and where it came from."""

    sensor: str
    window_end_ms: int
    model_version: str
    code: np.ndarray
    levels: np.ndarray = _NO_LEVELS


def encode_latent(sensor: str, window_end_ms: int, model_version: str, code: np.ndarray,
                  levels: np.ndarray | None = None) -> bytes:
    """The compact binary record of one latent code (float16 values) and its window's ``levels`` on the
    detrended channels (float32; :meth:`~aestream.scoring.Scorer.levels`), if any."""
    s, v = sensor.encode(), model_version.encode()
    if len(s) > 255 or len(v) > 255:
        raise AestreamError(f"sensor id or model version longer than 255 bytes: {sensor[:40]!r}, {model_version!r}")
    values = np.asarray(code, dtype="<f2")
    lv = _NO_LEVELS if levels is None else np.asarray(levels, dtype="<f4").ravel()
    if len(lv) > 255:
        raise AestreamError(f"{len(lv)} window levels for one latent record: at most 255 detrended channels fit")
    body = bytes([len(s)]) + s + bytes([len(v)]) + v + values.tobytes()
    if not len(lv):
        return _HEAD.pack(MAGIC, window_end_ms, len(values)) + body
    return _HEAD.pack(MAGIC_LEVELS, window_end_ms, len(values)) + body + bytes([len(lv)]) + lv.tobytes()


def decode_latent(data: bytes) -> LatentCode:
    """Parse a record made by :func:`encode_latent` (``AEL1`` or ``AEL2``); raises :class:`AestreamError` on
    anything else."""
    try:
        magic, end_ms, n = _HEAD.unpack_from(data)
        if magic not in (MAGIC, MAGIC_LEVELS):
            raise ValueError(f"magic {magic!r}")
        at = _HEAD.size
        ls = data[at]
        sensor = data[at + 1 : at + 1 + ls].decode()
        at += 1 + ls
        lv = data[at]
        version = data[at + 1 : at + 1 + lv].decode()
        at += 1 + lv
        end = at + 2 * n
        m = data[end] if magic == MAGIC_LEVELS else 0
        size = end + 1 + 4 * m if magic == MAGIC_LEVELS else end
        if len(data) != size:
            raise ValueError(f"{len(data)} bytes, expected {size}")
        code = np.frombuffer(data, dtype="<f2", count=n, offset=at).astype(np.float32)
        levels = np.frombuffer(data, dtype="<f4", count=m, offset=end + 1).astype(np.float32) if m else _NO_LEVELS
    except (ValueError, IndexError, struct.error, UnicodeDecodeError) as e:
        raise AestreamError(f"not an aestream latent record ({e}): is this the streams.latent_topic?") from None
    return LatentCode(sensor, end_ms, version, code, levels)


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
            codes, levels = b.scorer.encode(windows), b.scorer.levels(windows)
            for s, code, level in zip(fresh, codes, levels):
                out.append(Outgoing(self.latent_topic, encode_latent(s.window.sensor, s.window.end_ms,
                                                                     s.model_version, code, level),
                                    s.window.sensor.encode()))
        return out
