"""``aestream simulate --batch``: one sensor a message, keyed by it; ``aestream embed``: no window spans a gap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest

import aestream.app
import aestream.kafka.kafka_python
from aestream.commands.cli import main
from aestream.config import load_config
from aestream.models.bundle import ModelBundle
from aestream.stream.codec import Block, Reading, ReadingDecoder
from aestream.stream.messages import Outgoing
from aestream.stream.windows import Window, Windower
from aestream.training.fit import fit_scorer

CH = ("a", "b", "c")
W = 24
T0 = 1_767_225_600_000


class _Sink:
    """Stands in for the Kafka producer: keeps what is sent."""

    sent: ClassVar[list[Outgoing]] = []

    def __init__(self, cfg: Any, **kwargs: Any) -> None:
        pass

    def send(self, message: Outgoing) -> None:
        self.sent.append(message)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _simulate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int) -> list[Outgoing]:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[paths]\nmodel_dir = "{tmp_path / "m"}"\n')
    sent: ClassVar[list[Outgoing]] = []
    monkeypatch.setattr(_Sink, "sent", sent)
    monkeypatch.setattr(aestream.kafka.kafka_python, "KafkaSink", _Sink)
    argv = ["--config", str(cfg), "simulate", "--sensors", "3", "--steps", "50", "--anomalies", "0", "--seed", "3",
            "--batch", str(batch)]
    assert main(argv) == 0
    return sent


@pytest.mark.parametrize("batch", [2, 4, 7])
def test_a_batched_message_holds_one_sensors_readings_keyed_by_it(
        batch: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    decoder = ReadingDecoder(load_config(None).stream.channels)
    single = [decoder.decode(m.value)[0] for m in _simulate(tmp_path, monkeypatch, 1)]
    messages = _simulate(tmp_path, monkeypatch, batch)
    decoded = [decoder.decode(m.value) for m in messages]
    for m, readings in zip(messages, decoded):
        assert {r.sensor for r in readings} == {m.key.decode() if m.key else None}
        assert 1 <= len(readings) <= batch
        if len(readings) > 1:  # the common form: one sensor's batch decodes to arrays
            assert isinstance(decoder.decode_blocks(m.value), Block)

    def per_sensor(readings: list[Reading]) -> dict[str, list[tuple[int, tuple[float, ...]]]]:
        t0 = min(r.ts_ms for r in readings)
        out: dict[str, list[tuple[int, tuple[float, ...]]]] = {}
        for r in readings:
            out.setdefault(r.sensor, []).append((r.ts_ms - t0, r.values))
        return out

    # the same readings as unbatched, each sensor's in time order across its messages
    assert per_sensor([r for rs in decoded for r in rs]) == per_sensor(single)
    # simulated time order across sensors kept: each message starts no earlier than the one before it
    firsts = [rs[0].ts_ms for rs in decoded]
    assert firsts == sorted(firsts)
    assert len(messages) == 3 * -(-50 // batch)


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    x = np.random.default_rng(0).standard_normal((600, 3))
    res = fit_scorer([x], CH, window_size=W, family="vanilla", latent_size=4, hidden_size=16, epochs=1,
                     device="cpu", torch_threads=1, detrend_channels=())
    return ModelBundle(res.scorer, threshold=1.0, channels=CH, version="v0001")


def _readings_with_gaps() -> pd.DataFrame:
    """Two sensors, one reading a second, with gaps of an hour (s1: two) and one of 6 s (s2: a shorter one)."""
    rng = np.random.default_rng(1)
    rows = []
    for sensor, n, gaps in (("s1", 100, {40: 3_600_000, 75: 3_600_000}), ("s2", 90, {50: 6_000})):
        ts = T0 + 1000 * np.arange(n) + np.cumsum([gaps.get(i, 0) for i in range(n)])
        for t, v in zip(ts.tolist(), rng.standard_normal((n, 3))):
            rows.append({"sensor": sensor, "ts": t, "a": v[0], "b": v[1], "c": v[2]})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # a file need not be in time order


@pytest.mark.parametrize(("stride", "stride_ms"), [(1, 0), (3, 0), (1, 7_000)])
def test_embed_cuts_windows_at_gaps_like_the_worker(
        stride: int, stride_ms: int, bundle: ModelBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    frame = _readings_with_gaps()
    frame.to_csv(tmp_path / "r.csv", index=False)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[paths]\nmodel_dir = "{tmp_path / "m"}"\n[stream]\nchannels = ["a", "b", "c"]\n'
                   f"window_size = {W}\nstride = {stride}\nstride_ms = {stride_ms}\nmax_gap_ms = 5000\n"
                   "[model]\ndetrend_channels = []\n")

    class _Store:
        def load(self, version: str | None = None) -> ModelBundle:
            return bundle

    monkeypatch.setattr(aestream.app, "open_model_store", lambda cfg: _Store())
    out_path = tmp_path / "out" / "z.parquet"  # its folder made, as report makes its own
    assert main(["--config", str(cfg), "embed", str(tmp_path / "r.csv"), "--out", str(out_path)]) == 0
    out = pd.read_parquet(out_path)

    windower = Windower(W, stride, 3, max_gap_ms=5000, stride_ms=stride_ms)
    ends = [(w.sensor, w.end_ms) for r in frame.sort_values(["sensor", "ts"]).itertuples()
            if isinstance(w := windower.push(str(r.sensor), int(r.ts), (r.a, r.b, r.c)), Window)]
    assert windower.n_gaps == 3
    assert list(zip(out["sensor"], out["window_end_ms"].tolist())) == ends
    assert json.loads(capsys.readouterr().out)["windows"] == len(ends)
