"""The denoised and latent streams on the real broker, read back by a separate consumer."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from aestream.commands.simulate import Plant
from aestream.config import Config
from aestream.models.store import ModelStore
from aestream.outputs.streams import StreamsStage, decode_latent, decode_window, residual_steps
from aestream.stream.codec import ReadingDecoder, encode_reading
from aestream.training.fit import sliding_windows

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("step_std", [0.0, 0.05])  # 0.05: AEL3 records, each value within half a step
def test_worker_produces_both_streams_and_latents_decode_to_the_scored_windows(
        topics: Config, kafka_tools: dict[str, Any], train_small: Any, step_std: float) -> None:
    cfg = topics.replace(streams={"denoised_topic": f"{topics.kafka.output_topic}-clean",
                                  "latent_topic": f"{topics.kafka.output_topic}-latent",
                                  "latent_residual_step_std": step_std},
                         model={"detrend_channels": ("temperature",)})  # its window level travels in the record
    store = ModelStore(cfg.paths.model_dir)
    store.publish(train_small(cfg))
    plant = Plant(4, cfg.stream.channels, seed=0)
    plant.signal(800)
    readings = plant.readings(120, 1_767_225_600_000, step0=800)
    kafka_tools["produce"](cfg, [(s.encode(), encode_reading(s, ts, v)) for s, ts, v in readings])
    worker = kafka_tools["make_worker"](cfg)  # the app builds the streams stage from cfg.streams
    assert [type(s) for s in worker.stages] == [StreamsStage]
    kafka_tools["run_until_idle"](worker)

    clean = kafka_tools["read_all"](cfg, cfg.streams.denoised_topic)
    latent = kafka_tools["read_all"](cfg, cfg.streams.latent_topic)
    assert len(clean) == len(latent) == worker.totals.windows > 0
    # the denoised stream is in the input reading format: the reading decoder accepts it as is
    decoder = ReadingDecoder(cfg.stream.channels)
    assert all(decoder.decode(m.value)[0].sensor == m.key.decode() for m in clean)

    # a separate consumer: decode each latent code with the model version named in it
    bundle = store.load()
    by_sensor = {s: np.array([v for s2, _, v in readings if s2 == s]) for s in plant.sensors}
    w, stride = cfg.stream.window_size, cfg.stream.stride
    for m in latent:
        code = decode_latent(m.value)
        assert code.model_version == bundle.version
        step = (code.window_end_ms - 1_767_225_600_000) // 1000 - 800
        assert (step - (w - 1)) % stride == 0
        scored_window = by_sensor[code.sensor][step - w + 1 : step + 1]
        assert m.value[:4] == (b"AEL3" if step_std else b"AEL2") and code.levels.shape == (1,)
        np.testing.assert_allclose(code.levels, scored_window[:, [0]].mean(axis=0), rtol=1e-6)  # float32
        scorer = store.load(code.model_version).scorer
        decoded = decode_window(code, scorer)
        if step_std:  # every value of the scored window (float32 readings) within half a step
            half = residual_steps(step_std, scorer.preprocessor.std) / 2
            assert (np.abs(decoded - scored_window) <= half + 1e-6 * np.abs(scored_window)).all()
            continue
        expected = bundle.scorer.reconstruct(scored_window[None])[0]
        np.testing.assert_allclose(decoded, expected, rtol=0.02, atol=0.05 * np.abs(expected).mean())
    docs = [json.loads(m.value) for m in clean]
    assert sum(not d["denoised"] for d in docs) == worker.totals.events  # alarmed windows pass raw readings
    assert len(sliding_windows(by_sensor["sensor-00"], w, stride)) == sum(d["sensor"] == "sensor-00" for d in docs)
