"""Beyond alerts: the denoised signal and the latent code of every scored window, as streams.

* **Denoised stream** (``streams.denoised_topic``): for each scored window, the reconstruction of the sensor's
  latest reading, in the input reading format plus ``"denoised": true`` and the model version — any consumer of
  readings can subscribe to it. A window the alarm rule flags passes the raw reading through with
  ``"denoised": false`` (an anomaly is never cleaned away), unless ``streams.denoise_anomalies = true``.
* **Latent stream** (``streams.latent_topic``): each window's latent code in a compact binary record
  (:func:`encode_latent`), with the window's level on each channel the model detrends (the encoder sees those
  channels without their level) and, with ``streams.latent_residual_step_std > 0``, the quantised residual that
  bounds every decoded value's error; ``aestream decode`` turns records back into windows
  (:func:`decode_window`) with the model version that made them.

Latent record layout (little-endian)::

    b"AEL1" | window_end_ms: int64 | n: uint16 | len(sensor): uint8 | sensor utf-8 | len(version): uint8
           | version utf-8 | n × float16 latent values
    b"AEL2" | the same fields as AEL1 | m: uint8 | m × float32 levels
    b"AEL3" | the same fields as AEL2 (m may be 0) | step_std: float32 | W: uint16 | C: uint8 | residual bits

An ``AEL2`` record is written when the model detrends ``m`` > 0 channels: the levels are the window's mean of
each of them in the readings' own units, in the model's channel order (float32: float16 cannot hold a level of
10000 to better than 8). A model that detrends nothing writes ``AEL1``, which reads back with no levels.

An ``AEL3`` record adds the window's residual against exactly what the decoder rebuilds from the record's code
and levels (``scorer.decode``): each channel's quantisation step is ``step_std`` × that channel's training
standard deviation (the model's ``preprocessor.std``, so the record carries one number, not one per channel),
and the ``W × C`` integers ``round((window − reconstruction) / step)`` are Rice-coded channel by channel
(:func:`quantise_residual`): per channel a 5-bit Rice parameter ``k``, the channel's median integer as an
Elias-gamma code of its zigzag + 1, then each value's zigzag minus that median as ``z >> k`` ones, a zero and
the ``k`` low bits; zero bits pad the last byte. Decoding adds ``integer × step`` to the reconstruction, so every
value is within ``step / 2`` of the reading.

>>> rec = encode_latent("pump-7", 1767225600000, "v0003", np.array([0.5, -1.25], dtype=np.float32))
>>> code = decode_latent(rec)
>>> len(rec), code.sensor, code.window_end_ms, code.model_version, code.code.tolist(), code.levels.tolist()
(31, 'pump-7', 1767225600000, 'v0003', [0.5, -1.25], [])
>>> rec = encode_latent("pump-7", 1767225600000, "v0003", np.array([0.5, -1.25]), levels=np.array([10000.25]))
>>> len(rec), rec[:4], decode_latent(rec).levels.tolist()
(36, b'AEL2', [10000.25])
>>> q = np.array([[0, 1], [-2, 1], [1, 0]])
>>> rec = encode_latent("pump-7", 1767225600000, "v0003", np.array([0.5, -1.25]), residual=q, step_std=0.05)
>>> code = decode_latent(rec)
>>> len(rec), rec[:4], code.residual.tolist(), round(code.step_std, 6)
(43, b'AEL3', [[0, 1], [-2, 1], [1, 0]], 0.05)
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np

from aestream.detect.scoring import Scorer
from aestream.errors import AestreamError, LatentRecordError
from aestream.models.bundle import ModelBundle
from aestream.stream.events import compact_json
from aestream.stream.messages import Outgoing
from aestream.stream.stages import Scored, Stage

__all__ = ["MAX_RESIDUAL", "LatentCode", "StreamsStage", "decode_latent", "decode_window", "encode_latent",
           "quantise_residual", "residual_steps"]

log = logging.getLogger(__name__)

MAGIC = b"AEL1"
MAGIC_LEVELS = b"AEL2"
MAGIC_RESIDUAL = b"AEL3"
MAX_RESIDUAL = 2**30 - 1
"""The largest residual an ``AEL3`` record holds, in steps; a window further from its reconstruction is sent
without a residual (``AEL1``/``AEL2``)."""
_MAX_ID_BYTES = 255  # a sensor id and a model version each follow their length in one byte
_HEAD = struct.Struct("<4sqH")
_RESIDUAL_HEAD = struct.Struct("<fHB")
_K_BITS = 5  # Rice parameter 0..31: a zigzag of 2 × MAX_RESIDUAL fits in 31 bits plus one unary 1
_F32_TINY, _F32_MAX = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)
_NO_LEVELS = np.zeros(0, dtype=np.float32)
_NO_LEVELS.flags.writeable = False
_NO_RESIDUAL = np.zeros((0, 0), dtype=np.int64)
_NO_RESIDUAL.flags.writeable = False


class LatentCode(NamedTuple):
    """One window's latent code, its levels on the detrended channels (empty when none), its quantised residual
    ``(W, C)`` in steps of ``step_std`` training standard deviations (empty, and 0, when the record has none) and
    where it came from."""

    sensor: str
    window_end_ms: int
    model_version: str
    code: np.ndarray
    levels: np.ndarray = _NO_LEVELS
    residual: np.ndarray = _NO_RESIDUAL
    step_std: float = 0.0


def residual_steps(step_std: float, std: np.ndarray) -> np.ndarray:
    """Each channel's quantisation step in the readings' units: ``step_std`` (rounded to float32, as a record
    carries it) × the channel's training standard deviation. Encoder and decoder both compute it here.

    >>> residual_steps(0.1, np.array([2.0, 10.0])).round(6).tolist()
    [0.2, 1.0]
    """
    return float(np.float32(step_std)) * np.asarray(std, dtype=np.float64)


def quantise_residual(windows: np.ndarray, reconstruction: np.ndarray,
                      steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The residual of windows ``(B, W, C)`` against their ``reconstruction`` as whole steps:
    ``round((windows − reconstruction) / steps)`` (int64), and per window whether every value fits within
    ±:data:`MAX_RESIDUAL` steps (a window that does not fit gets zeros). ``reconstruction + q × steps`` is then
    within ``steps / 2`` of each value.

    >>> q, fits = quantise_residual(np.array([[[1.0, 100.0]]]), np.array([[[0.5, 101.4]]]), np.array([0.2, 1.0]))
    >>> q.tolist(), fits.tolist()
    ([[[2, -1]]], [True])
    """
    r = (np.asarray(windows, dtype=np.float64) - reconstruction) / steps
    fits = (np.abs(r) <= MAX_RESIDUAL).all(axis=(1, 2))  # NaN or inf never fit
    q = np.zeros(r.shape, dtype=np.int64)
    q[fits] = np.rint(r[fits])
    return q, fits


def encode_latent(sensor: str, window_end_ms: int, model_version: str, code: np.ndarray,
                  levels: np.ndarray | None = None, residual: np.ndarray | None = None,
                  step_std: float = 0.0) -> bytes:
    """The compact binary record of one latent code (float16 values), its window's ``levels`` on the detrended
    channels (float32; :meth:`~aestream.detect.scoring.Scorer.levels`), if any, and its quantised ``residual``
    ``(W, C)`` in steps of ``step_std`` training standard deviations (:func:`quantise_residual`), if any."""
    s, v = sensor.encode(), model_version.encode()
    if len(s) > _MAX_ID_BYTES or len(v) > _MAX_ID_BYTES:
        raise AestreamError(f"sensor id or model version longer than {_MAX_ID_BYTES} bytes: {sensor[:40]!r}, "
                            f"{model_version!r}")
    values = np.asarray(code, dtype="<f2")
    lv = _NO_LEVELS if levels is None else np.asarray(levels, dtype="<f4").ravel()
    if len(lv) > 255:
        raise AestreamError(f"{len(lv)} window levels for one latent record: at most 255 detrended channels fit")
    body = bytes([len(s)]) + s + bytes([len(v)]) + v + values.tobytes()
    if residual is not None:
        body += bytes([len(lv)]) + lv.tobytes() + _residual_bytes(np.asarray(residual), step_std)
        return _HEAD.pack(MAGIC_RESIDUAL, window_end_ms, len(values)) + body
    if not len(lv):
        return _HEAD.pack(MAGIC, window_end_ms, len(values)) + body
    return _HEAD.pack(MAGIC_LEVELS, window_end_ms, len(values)) + body + bytes([len(lv)]) + lv.tobytes()


def decode_latent(data: bytes) -> LatentCode:
    """Parse a record made by :func:`encode_latent` (``AEL1``, ``AEL2`` or ``AEL3``); raises
    :class:`~aestream.errors.LatentRecordError` on anything else."""
    try:
        magic, end_ms, n = _HEAD.unpack_from(data)
        if magic not in (MAGIC, MAGIC_LEVELS, MAGIC_RESIDUAL):
            raise ValueError(f"magic {magic!r}")
        at = _HEAD.size
        ls = data[at]
        sensor = data[at + 1 : at + 1 + ls].decode()
        at += 1 + ls
        lv = data[at]
        version = data[at + 1 : at + 1 + lv].decode()
        at += 1 + lv
        end = at + 2 * n
        m = data[end] if magic != MAGIC else 0
        size = end + 1 + 4 * m if magic != MAGIC else end
        residual, step_std = _NO_RESIDUAL, 0.0
        if magic == MAGIC_RESIDUAL:
            step_std, w, c = _RESIDUAL_HEAD.unpack_from(data, size)
            if not (math.isfinite(step_std) and step_std > 0 and w and c):
                raise ValueError(f"step_std {step_std}, {w} × {c} residuals")
            residual = _rice_decode(data[size + _RESIDUAL_HEAD.size :], w, c)
        elif len(data) != size:
            raise ValueError(f"{len(data)} bytes, expected {size}")
        code = np.frombuffer(data, dtype="<f2", count=n, offset=at).astype(np.float32)
        levels = np.frombuffer(data, dtype="<f4", count=m, offset=end + 1).astype(np.float32) if m else _NO_LEVELS
    except (ValueError, IndexError, OverflowError, struct.error, UnicodeDecodeError) as e:
        raise LatentRecordError(f"not an aestream latent record ({e}): is this the streams.latent_topic?") from None
    return LatentCode(sensor, end_ms, version, code, levels, residual, float(step_std))


def _shortest(values: np.ndarray) -> list[float]:
    """The float32 values of a window row as the shortest decimals that read back as them: a reading of 3.2e-07 or
    61.2 goes out as written, not rounded to a number of decimals (nor as float32's binary expansion).

    >>> _shortest(np.array([3.2e-07, 61.2, 123456789.0], dtype=np.float32))
    [3.2e-07, 61.2, 123456790.0]
    """
    return [float(str(v)) for v in np.asarray(values, dtype=np.float32)]


def decode_window(code: LatentCode, scorer: Scorer) -> np.ndarray:
    """The window ``(W, C)`` in the readings' units that a record stands for, decoded with the scorer of the
    model version that made it: the reconstruction from its code and levels, plus its residual × each
    channel's step when it carries one (``AEL3``: every value within ``step / 2`` of the scored window)."""
    levels = code.levels[None] if code.levels.size else None  # an AEL1 record carries none
    window: np.ndarray = scorer.decode(code.code[None], levels)[0]
    if not code.residual.size:
        return window
    if code.residual.shape != window.shape:
        raise AestreamError(f"latent record of {code.sensor!r} at {code.window_end_ms} carries a {code.residual.shape}"
                            f" residual, but model {code.model_version} decodes {window.shape} windows: decode it "
                            f"with the model version named in the record")
    return window + code.residual * residual_steps(code.step_std, scorer.preprocessor.std)


def _residual_bytes(q: np.ndarray, step_std: float) -> bytes:
    if q.ndim != 2 or not 1 <= q.shape[0] <= 65535 or not 1 <= q.shape[1] <= 255 or q.dtype.kind not in "iu":
        raise AestreamError(f"a latent residual must be integers of shape (window, channels) with at most 65535 "
                            f"readings and 255 channels, not {q.dtype} {q.shape}: use quantise_residual")
    if np.abs(q).max() > MAX_RESIDUAL:
        raise AestreamError(f"latent residual of {int(np.abs(q).max())} steps is beyond ±{MAX_RESIDUAL}: keep only "
                            f"windows quantise_residual says fit")
    if not _F32_TINY <= step_std <= _F32_MAX:  # NaN fails too
        raise AestreamError(f"latent residual step_std = {step_std!r} is invalid: use a positive number of training "
                            f"standard deviations (streams.latent_residual_step_std)")
    return _RESIDUAL_HEAD.pack(step_std, *q.shape) + _rice_encode(q.astype(np.int64))


def _zigzag(a: np.ndarray) -> np.ndarray:
    return (a << 1) ^ (a >> 63)


def _rice_encode(q: np.ndarray) -> bytes:
    """Channel by channel: Rice parameter ``k`` (5 bits), the median as Elias-gamma of its zigzag + 1, then the
    Rice codes of each value's zigzag minus it (``k`` chosen for the fewest bits)."""
    cols = q.T  # (C, W)
    w = cols.shape[1]
    median = np.rint(np.median(cols, axis=1)).astype(np.int64)
    z = _zigzag(cols - median[:, None])
    ks = np.arange(2**_K_BITS)
    k = ((z[:, None, :] >> ks[None, :, None]).sum(axis=2) + w * (1 + ks)).argmin(axis=1)
    gamma = _zigzag(median) + 1
    n_gamma = np.frexp(gamma.astype(np.float64))[1]  # bit length (exact below 2**53)
    ones = np.zeros((len(cols), w + 2), dtype=np.int64)
    ones[:, 2:] = z >> k[:, None]
    width = np.empty_like(ones)
    width[:, 0], width[:, 1], width[:, 2:] = _K_BITS, 2 * n_gamma - 1, k[:, None] + 1
    value = np.empty_like(ones)
    value[:, 0], value[:, 1], value[:, 2:] = k, gamma, z & ((1 << k) - 1)[:, None]
    return np.packbits(_bits(ones.ravel(), width.ravel(), value.ravel())).tobytes()


def _bits(ones: np.ndarray, width: np.ndarray, value: np.ndarray) -> np.ndarray:
    """The bits of items that are each ``ones[i]`` 1-bits then ``value[i]`` in ``width[i]`` bits, MSB first."""
    size = ones + width
    start = np.cumsum(size) - size
    bits = np.zeros(int(size.sum()), dtype=np.uint8)
    bits[np.repeat(start, ones) + np.arange(int(ones.sum())) - np.repeat(np.cumsum(ones) - ones, ones)] = 1
    j = np.arange(int(width.sum())) - np.repeat(np.cumsum(width) - width, width)
    bits[np.repeat(start + ones, width) + j] = (np.repeat(value, width) >> (np.repeat(width, width) - 1 - j)) & 1
    return bits


def _rice_decode(data: bytes, w: int, c: int) -> np.ndarray:
    """Inverse of :func:`_rice_encode`: ``(w, c)`` int64; ValueError unless ``data`` holds exactly those bits."""
    s = format(int.from_bytes(data, "big"), f"0{8 * len(data)}b") if data else ""
    out = np.empty((c, w), dtype=np.int64)
    p = 0

    def take(n_bits: int) -> int:
        nonlocal p
        if p + n_bits > len(s):
            raise ValueError(f"the residual bits end after {len(data)} bytes, before {w} × {c} values")
        p += n_bits
        return int(s[p - n_bits : p], 2) if n_bits else 0

    for ch in range(c):
        k = take(_K_BITS)
        zeros = s.find("1", p) - p
        if zeros < 0:
            take(len(s) + 1)  # raises
        gamma = take(2 * zeros + 1)
        row = []
        for _ in range(w):
            e = s.find("0", p)
            if e < 0:
                take(len(s) + 1)
            u, p = e - p, e + 1
            row.append((u << k) | take(k))
        median = ((gamma - 1) >> 1) ^ -((gamma - 1) & 1)
        if abs(median) > MAX_RESIDUAL or max(row) > 4 * MAX_RESIDUAL + 1:  # no encoder writes these (nor int64 holds)
            raise ValueError(f"channel {ch}'s residuals are beyond ±{MAX_RESIDUAL}")
        z = np.array(row, dtype=np.int64)
        out[ch] = ((z >> 1) ^ -(z & 1)) + median
        if np.abs(out[ch]).max() > MAX_RESIDUAL:
            raise ValueError(f"channel {ch}'s residuals are beyond ±{MAX_RESIDUAL}")
    if len(s) - p >= 8 or "1" in s[p:]:
        raise ValueError(f"{len(s) - p} bits left after {w} × {c} residual values")
    return out.T


class StreamsStage(Stage):
    """A worker stage that emits the denoised and latent streams for every freshly scored window; with
    ``latent_residual_step_std > 0`` each latent record carries the window's quantised residual (``AEL3``)."""

    def __init__(
        self,
        bundle: Callable[[], ModelBundle | None],
        channels: tuple[str, ...],
        denoised_topic: str = "",
        latent_topic: str = "",
        denoise_anomalies: bool = False,
        latent_residual_step_std: float = 0.0,
    ) -> None:
        self.bundle = bundle
        self.channels = channels
        self.denoised_topic = denoised_topic
        self.latent_topic = latent_topic
        self.denoise_anomalies = denoise_anomalies
        self.latent_residual_step_std = latent_residual_step_std
        self._unfit_sensors: set[str] = set()
        self._long_ids: set[str] = set()  # sensors whose id is too long for a latent record (warned once)

    def forget(self, sensors: Iterable[str]) -> None:
        """Sensors gone (their partition moved, or idle past the TTL): drop what was said once of them."""
        for s in sensors:
            self._unfit_sensors.discard(s)
            self._long_ids.discard(s)

    evict = forget

    def topics(self) -> tuple[str, ...]:
        return tuple(t for t in (self.denoised_topic, self.latent_topic) if t)

    def on_scored(self, scored: list[Scored]) -> list[Outgoing]:
        fresh = [s for s in scored if not s.replay]
        b = self.bundle()
        if not fresh or b is None or not (self.denoised_topic or self.latent_topic):
            return []
        windows = np.stack([s.window.values for s in fresh])
        out: list[Outgoing] = []
        if self.denoised_topic:
            with np.errstate(over="ignore", invalid="ignore"):  # a reading near float32's limit: handled below
                # as the record carries them: a value beyond float32's range is inf here, not null in the record
                latest = b.scorer.reconstruct(windows)[:, -1, :].astype(np.float32)
            for s, clean in zip(fresh, latest):
                # a reconstruction that is not finite (a reading near float32's limit) is no reading: the raw one
                passthrough = (s.alarm and not self.denoise_anomalies) or not np.isfinite(clean).all()
                values = s.window.values[-1] if passthrough else clean
                if not np.isfinite(values).all():
                    continue  # a reading beyond float32's range, infinite in the window: nothing to send
                doc = {"sensor": s.window.sensor, "ts": s.window.end_ms, "values": _shortest(values),
                       "denoised": not passthrough, "model_version": s.model_version}
                out.append(Outgoing(self.denoised_topic, compact_json(doc), s.window.sensor.encode()))
        if self.latent_topic:
            out.extend(self._latent(b.scorer, fresh, windows))
        return out

    def _latent(self, scorer: Scorer, fresh: list[Scored], windows: np.ndarray) -> list[Outgoing]:
        codes, levels = scorer.encode(windows).astype(np.float16), scorer.levels(windows).astype(np.float32)
        step = self.latent_residual_step_std
        residuals: list[np.ndarray | None] = [None] * len(fresh)
        if step > 0:
            # against exactly what decode_window rebuilds: the float16 code and float32 levels the record carries,
            # decoded one window at a time as it decodes them (a batch's products round differently)
            recon = np.concatenate([scorer.decode(codes[i : i + 1].astype(np.float32),
                                                  levels[i : i + 1].astype(np.float64)) for i in range(len(codes))])
            q, fits = quantise_residual(windows, recon, residual_steps(step, scorer.preprocessor.std))
            residuals = list(q)
            for i in np.flatnonzero(~fits):
                residuals[i] = None
                self._warn_unfit(fresh[i])
        return [Outgoing(self.latent_topic, encode_latent(s.window.sensor, s.window.end_ms, s.model_version, code,
                                                          level, residual, step), s.window.sensor.encode())
                for s, code, level, residual in zip(fresh, codes, levels, residuals) if self._fits(s.window.sensor)]

    def _fits(self, sensor: str) -> bool:
        """Whether ``sensor``'s id fits a latent record (255 UTF-8 bytes; the readings take 256 characters): one
        that does not has no latent stream, warned once, rather than stop the worker at every replay."""
        if len(sensor) * 4 <= _MAX_ID_BYTES or len(sensor.encode()) <= _MAX_ID_BYTES:
            return True
        if sensor not in self._long_ids:
            self._long_ids.add(sensor)
            log.warning("sensor %s...: its id is %d UTF-8 bytes, more than a latent record holds (%d): no latent "
                        "records for it", sensor[:40], len(sensor.encode()), _MAX_ID_BYTES)
        return False

    def _warn_unfit(self, s: Scored) -> None:
        """A window beyond ±MAX_RESIDUAL steps of its reconstruction goes out without a residual (warned once per
        sensor)."""
        if s.window.sensor not in self._unfit_sensors:
            self._unfit_sensors.add(s.window.sensor)
            log.warning("latent window of sensor %s at %d is more than %d steps of %s training stds from its "
                        "reconstruction: sent without its residual (AEL1/AEL2); raise "
                        "streams.latent_residual_step_std if this recurs", s.window.sensor, s.window.end_ms,
                        MAX_RESIDUAL, self.latent_residual_step_std)
