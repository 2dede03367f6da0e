from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aestream.commands.embed import embed_frame
from aestream.errors import AestreamError, LatentRecordError
from aestream.models.bundle import ModelBundle
from aestream.outputs.streams import (
    MAX_RESIDUAL,
    StreamsStage,
    decode_latent,
    decode_window,
    encode_latent,
    quantise_residual,
    residual_steps,
)
from aestream.stream.stages import Scored
from aestream.stream.windows import Window, Windower
from aestream.training.fit import fit_scorer, sliding_windows

CH = ("a", "b", "c")
W = 24


def _truth(n: int) -> np.ndarray:
    t = np.arange(n)
    return np.stack([np.sin(2 * np.pi * t / 40), np.cos(2 * np.pi * t / 25), np.sin(2 * np.pi * t / 40 + 1)], 1)


@pytest.fixture(scope="module")
def denoiser() -> ModelBundle:
    rng = np.random.default_rng(0)
    noisy = _truth(4000) + 0.3 * rng.standard_normal((4000, 3))
    result = fit_scorer([noisy], CH, window_size=W, family="denoising", latent_size=8, hidden_size=64, epochs=40,
                        family_params={"noise_std": 0.3, "mask_prob": 0.1}, device="cpu", torch_threads=1)
    return ModelBundle(result.scorer, threshold=1e9, channels=CH, version="v0001")


def _drifting(n: int, seed: int) -> np.ndarray:
    """Channels a and c drift slowly around levels far from zero (a near 10000, where float16 steps by 8)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    drift = np.cumsum(rng.standard_normal(n)) * 0.5
    shape = _truth(n)
    return np.stack([10_000 + 20 * drift / max(1.0, np.abs(drift).max()) + shape[:, 0],
                     shape[:, 1] + 0.1 * rng.standard_normal(n),
                     -40 + 0.02 * t + 3 * shape[:, 2]], 1)


@pytest.fixture(scope="module")
def detrender() -> ModelBundle:
    result = fit_scorer([_drifting(3000, 0)], CH, window_size=W, family="vanilla", latent_size=6, hidden_size=32,
                        epochs=15, detrend_channels=("a", "c"), device="cpu", torch_threads=1)
    return ModelBundle(result.scorer, threshold=1e9, channels=CH, version="v0002")


def test_the_denoised_stream_halves_the_error_of_the_noisy_signal(denoiser: ModelBundle) -> None:
    rng = np.random.default_rng(1)
    truth = _truth(1200)
    noisy = truth + 0.3 * rng.standard_normal(truth.shape)
    windows = sliding_windows(noisy, W)
    stage = StreamsStage(lambda: denoiser, CH, denoised_topic="clean")
    scored = [Scored(Window("s", i, i + W - 1, w), 1.0, 2.0, False, np.ones(3) / 3, "v0001")
              for i, w in enumerate(windows)]
    docs = [json.loads(m.value) for m in stage.on_scored(scored)]
    assert all(d["denoised"] and d["sensor"] == "s" for d in docs)
    denoised = np.array([d["values"] for d in docs])
    target = truth[W - 1 :]
    rmse_noisy = np.sqrt(((noisy[W - 1 :] - target) ** 2).mean())
    rmse_denoised = np.sqrt(((denoised - target) ** 2).mean())
    assert rmse_denoised <= 0.5 * rmse_noisy, (rmse_denoised, rmse_noisy)


def test_an_anomalous_window_passes_the_raw_reading_through(denoiser: ModelBundle) -> None:
    window = sliding_windows(_truth(W) + 5.0, W)[0]
    stage = StreamsStage(lambda: denoiser, CH, denoised_topic="clean")
    doc = json.loads(stage.on_scored([Scored(Window("s", 0, 1, window), 9.0, 2.0, True, np.ones(3) / 3,
                                                "v0001")])[0].value)
    assert doc["denoised"] is False and doc["values"] == pytest.approx(window[-1].tolist(), abs=1e-5)


def test_a_passed_through_reading_keeps_its_digits(denoiser: ModelBundle) -> None:
    window = sliding_windows(_truth(W) + 5.0, W)[0].astype(np.float32)
    window[-1] = [3.2e-07, 0.00123457, 61.2]  # a channel in small units, one with more than six decimals
    stage = StreamsStage(lambda: denoiser, CH, denoised_topic="clean")
    doc = json.loads(stage.on_scored([Scored(Window("s", 0, 1, window), 9.0, 2.0, True, np.ones(3) / 3,
                                                "v0001")])[0].value)
    assert doc["denoised"] is False and doc["values"] == [3.2e-07, 0.00123457, 61.2]


def test_a_window_whose_reconstruction_is_not_finite_sends_a_reading_or_nothing(denoiser: ModelBundle) -> None:
    windows = sliding_windows(_truth(W + 2) + 5.0, W).astype(np.float32)  # three windows
    windows[0, -1, 1] = 3e38  # a valid float32 reading that overflows the model's preprocessing
    windows[1, -1, 1] = np.inf  # what a reading beyond float32's range becomes in a window
    stage = StreamsStage(lambda: denoiser, CH, denoised_topic="clean", denoise_anomalies=True)
    docs = [json.loads(m.value) for m in stage.on_scored(_scored(windows, "v0001"))]
    assert [(d["ts"], d["denoised"]) for d in docs] == [(1000 + W - 1, False), (1002 + W - 1, True)]
    assert all(isinstance(v, float) and np.isfinite(v) for d in docs for v in d["values"])
    assert docs[0]["values"][1] == 3e38


def test_embed_keeps_the_first_reading_of_a_repeated_time_as_the_worker_does(denoiser: ModelBundle) -> None:
    truth = _truth(60)
    ts = 1_767_225_600_000 + 1000 * np.arange(60)
    frame = pd.DataFrame({"ts": ts, "a": truth[:, 0], "b": truth[:, 1], "c": truth[:, 2]})
    retry = frame.iloc[[30]].assign(a=99.0)  # a producer's retry of the reading at 30 s, other values
    out = embed_frame(pd.concat([frame, retry], ignore_index=True), denoiser, stride=1)
    pd.testing.assert_frame_equal(out, embed_frame(frame, denoiser, stride=1))


def test_embed_of_a_file_with_a_header_alone_says_it_has_no_window(denoiser: ModelBundle) -> None:
    empty = pd.DataFrame({"ts": np.array([], dtype=np.int64), "a": [], "b": [], "c": []})  # was an IndexError
    with pytest.raises(AestreamError, match="no sensor in the file has a full window"):
        embed_frame(empty, denoiser, stride=1)


def test_latent_records_round_trip_and_bad_bytes_are_refused(denoiser: ModelBundle) -> None:
    windows = sliding_windows(_truth(200), W, 8)
    codes = denoiser.scorer.encode(windows)
    records = [encode_latent("pump-1", 1000 + i, "v0001", c) for i, c in enumerate(codes)]
    back = [decode_latent(r) for r in records]
    assert [b.window_end_ms for b in back] == list(range(1000, 1000 + len(codes)))
    np.testing.assert_allclose(np.stack([b.code for b in back]), codes, rtol=2e-3, atol=2e-3)  # float16
    decoded = denoiser.scorer.decode(np.stack([b.code for b in back]))
    np.testing.assert_allclose(decoded, denoiser.scorer.reconstruct(windows), atol=0.02)
    from aestream.stream.codec import encode_reading

    raw = sum(len(encode_reading("pump-1", 1_767_225_600_000 + i, row.tolist())) for i, row in enumerate(windows[0]))
    assert 16 * len(records[0]) <= raw  # the code of a window is ≥ 16× smaller than its readings as JSON
    with pytest.raises(AestreamError, match="not an aestream latent record"):
        decode_latent(b'{"sensor": "x"}')


def test_decoding_a_code_with_its_levels_gives_back_the_reconstruction(detrender: ModelBundle) -> None:
    scorer = detrender.scorer
    windows = sliding_windows(_drifting(400, 1), W, 8)
    levels = scorer.levels(windows)
    assert levels.shape == (len(windows), 2)
    np.testing.assert_allclose(levels, windows[:, :, [0, 2]].astype(np.float64).mean(axis=1))
    decoded = scorer.decode(scorer.encode(windows), levels)
    np.testing.assert_allclose(decoded, scorer.reconstruct(windows), rtol=1e-6, atol=1e-6)
    # without its levels a detrended channel comes back around the training mean, far from the window
    assert np.abs(scorer.decode(scorer.encode(windows)) - decoded)[:, :, 0].max() > 5
    with pytest.raises(AestreamError, match=r"window levels of shape \(3, 1\) do not fit 3 window\(s\) of a model "
                                            r"that detrends 2 channel\(s\)"):
        scorer.decode(scorer.encode(windows[:3]), levels[:3, :1])


def test_latent_records_of_a_detrending_model_decode_to_the_scored_windows(detrender: ModelBundle) -> None:
    scorer = detrender.scorer
    windows = sliding_windows(_drifting(400, 2), W, 8)
    stage = StreamsStage(lambda: detrender, CH, latent_topic="latent")
    scored = [Scored(Window("pump-1", 1000 + i, 1000 + i + W - 1, w), 1.0, 2.0, False, np.ones(3) / 3, "v0002")
              for i, w in enumerate(windows)]
    records = [m.value for m in stage.on_scored(scored)]
    assert {r[:4] for r in records} == {b"AEL2"}
    n_levels_free = len(encode_latent("pump-1", 0, "v0002", np.zeros(6)))
    assert {len(r) for r in records} == {n_levels_free + 1 + 2 * 4}  # m uint8, then m × float32
    back = [decode_latent(r) for r in records]
    assert [b.window_end_ms for b in back] == [s.window.end_ms for s in scored]
    levels = np.stack([b.levels for b in back])
    np.testing.assert_allclose(levels, scorer.levels(windows), rtol=1e-7)  # float32
    decoded = scorer.decode(np.stack([b.code for b in back]), levels)
    # float16 code, float32 levels: each channel within 3 % of its spread (a float16 level of 10000 is off by ≤ 4)
    atol = 0.03 * scorer.preprocessor.std
    expected = scorer.reconstruct(windows)
    assert (np.abs(decoded - expected) <= atol).all(), np.abs(decoded - expected).max(axis=(0, 1))
    with pytest.raises(AestreamError, match="not an aestream latent record"):
        decode_latent(records[0][:-1])


def test_embed_writes_one_row_per_window(denoiser: ModelBundle, tmp_path: Path) -> None:
    truth = _truth(100)
    frame = pd.DataFrame({"ts": 1_767_225_600_000 + 1000 * np.arange(100), "a": truth[:, 0], "b": truth[:, 1],
                          "c": truth[:, 2]})
    out = embed_frame(frame, denoiser, stride=4)
    assert len(out) == len(range(W - 1, 100, 4))
    assert list(out.columns[:3]) == ["sensor", "window_end_ms", "model_version"]
    assert not [c for c in out.columns if c.startswith("level_")]  # the denoiser detrends nothing
    assert out["window_end_ms"].iloc[0] == 1_767_225_600_000 + 1000 * (W - 1)
    out.to_parquet(tmp_path / "z.parquet")
    assert pd.read_parquet(tmp_path / "z.parquet").shape == out.shape


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_embed_with_stride_ms_ends_windows_where_the_worker_does(denoiser: ModelBundle, seed: int) -> None:
    truth = _truth(100)
    ts = 1_767_225_600_000 + np.cumsum(np.random.default_rng(seed).integers(600, 1400, size=100))
    frame = pd.DataFrame({"ts": ts, "a": truth[:, 0], "b": truth[:, 1], "c": truth[:, 2]})
    out = embed_frame(frame, denoiser, stride=1, stride_ms=3_000)
    windower = Windower(W, 1, 3, max_gap_ms=10_000, stride_ms=3_000)
    ends = [x.end_ms for t, v in zip(ts.tolist(), truth) if (x := windower.push("", t, tuple(v))) is not None]
    assert out["window_end_ms"].tolist() == ends and len(ends) > 10


def test_embed_adds_the_levels_of_a_detrending_model(detrender: ModelBundle) -> None:
    x = _drifting(100, 3)
    frame = pd.DataFrame({"ts": 1_767_225_600_000 + 1000 * np.arange(100), "a": x[:, 0], "b": x[:, 1],
                          "c": x[:, 2]})
    out = embed_frame(frame, detrender, stride=4)
    z = [f"z{i}" for i in range(6)]
    assert list(out.columns) == ["sensor", "window_end_ms", "model_version", *z, "level_a", "level_c"]
    windows = sliding_windows(x, W, 4)
    decoded = detrender.scorer.decode(out[z].to_numpy(), out[["level_a", "level_c"]].to_numpy())
    np.testing.assert_allclose(decoded, detrender.scorer.reconstruct(windows), rtol=1e-6, atol=1e-6)


def _scored(windows: np.ndarray, version: str, sensor: str = "pump-1") -> list[Scored]:
    """Scored windows as the worker hands them over: float32 readings."""
    return [Scored(Window(sensor, 1000 + i, 1000 + i + W - 1, w.astype(np.float32)), 1.0, 2.0, False,
                   np.ones(3) / 3, version) for i, w in enumerate(windows)]


def test_plain_latent_records_keep_their_exact_bytes() -> None:
    code = np.array([0.5, -1.25, 3.0])
    assert encode_latent("pump-7", 1767225600000, "v0003", code).hex() == (
        "41454c3100a8da769b01000003000670756d702d37057630303033003800bd0042")
    assert encode_latent("pump-7", 1767225600000, "v0003", code, levels=np.array([10000.25, -3.5])).hex() == (
        "41454c3200a8da769b01000003000670756d702d37057630303033003800bd00420200411c46000060c0")
    back = decode_latent(encode_latent("pump-7", 1, "v0003", code))
    assert back.residual.shape == (0, 0) and back.step_std == 0.0


@pytest.mark.parametrize("step_std", [1e-5, 0.05, 0.5])
@pytest.mark.parametrize("model", ["denoiser", "detrender"])
def test_residual_records_decode_within_half_a_step_of_every_scored_value(
        model: str, step_std: float, request: pytest.FixtureRequest) -> None:
    bundle: ModelBundle = request.getfixturevalue(model)
    x = _drifting(400, 5) if model == "detrender" else _truth(400) + 0.3 * np.random.default_rng(5).standard_normal(
        (400, 3))
    scored = _scored(sliding_windows(x, W, 8), bundle.version)
    records = [m.value for m in StreamsStage(lambda: bundle, CH, latent_topic="latent",
                                             latent_residual_step_std=step_std).on_scored(scored)]
    assert {r[:4] for r in records} == {b"AEL3"} and len(records) == len(scored)
    steps = residual_steps(step_std, bundle.scorer.preprocessor.std)
    worst = np.zeros(3)
    for r, s in zip(records, scored):
        code = decode_latent(r)
        assert (code.sensor, code.window_end_ms, code.model_version) == ("pump-1", s.window.end_ms, bundle.version)
        assert code.step_std == np.float32(step_std) and code.residual.shape == (W, 3)
        error = np.abs(decode_window(code, bundle.scorer) - s.window.values)
        worst = np.maximum(worst, error.max(axis=0))
    # every value, every channel: within half a step (the residual is taken against the decode that decode_window
    # does, one window at a time: a batch's products round differently, by up to ~1e-6 of a std)
    assert (worst <= steps / 2 * (1 + 1e-6)).all(), (worst, steps / 2)
    assert (worst > 0.3 * steps).any()  # the bound is what the error approaches, not a loose ceiling
    plain = StreamsStage(lambda: bundle, CH, latent_topic="latent").on_scored(scored)
    assert {m.value[:4] for m in plain} == ({b"AEL2"} if model == "detrender" else {b"AEL1"})  # step 0: as before
    assert all(len(a) > len(b.value) for a, b in zip(records, plain))


def test_the_residual_costs_about_its_entropy() -> None:
    rng = np.random.default_rng(0)
    q = np.rint(10 * rng.standard_normal((32, 8))).astype(np.int64)  # a white-noise channel at a step of 0.1 std
    plain = len(encode_latent("s", 0, "v1", np.zeros(4)))
    bits = 8 * (len(encode_latent("s", 0, "v1", np.zeros(4), residual=q, step_std=0.1)) - plain - 1 - 7)
    entropy = np.log2(10 * np.sqrt(2 * np.pi * np.e))  # of a rounded Gaussian of std 10 steps: 5.37 bits
    assert entropy * q.size <= bits <= 1.1 * entropy * q.size


def test_residuals_of_any_size_round_trip() -> None:
    rng = np.random.default_rng(1)
    shapes = [(1, 1), (1, 255), (300, 1), (32, 8), (7, 3)]
    for i, shape in enumerate(shapes * 4):
        q = np.rint(rng.standard_normal(shape) * 10.0 ** rng.uniform(0, 9)).clip(-MAX_RESIDUAL, MAX_RESIDUAL)
        q = q.astype(np.int64) if i % 5 else np.zeros(shape, dtype=np.int64)
        q.flat[0], q.flat[-1] = (MAX_RESIDUAL, -MAX_RESIDUAL) if i % 3 == 0 else (q.flat[0], q.flat[-1])
        rec = encode_latent("s", 0, "v1", np.zeros(2), levels=np.ones(i % 3), residual=q, step_std=0.01)
        back = decode_latent(rec)
        assert back.residual.tolist() == q.tolist() and back.levels.tolist() == [1.0] * (i % 3)


def test_a_corrupt_or_truncated_residual_record_is_refused(denoiser: ModelBundle) -> None:
    scored = _scored(sliding_windows(_truth(100), W, 8), denoiser.version)
    rec = StreamsStage(lambda: denoiser, CH, latent_topic="latent",
                       latent_residual_step_std=0.1).on_scored(scored)[0].value
    at = len(encode_latent("pump-1", 0, denoiser.version, np.zeros(8))) + 1  # the step_std field
    for bad, why in [(rec[:-1], "the residual bits end after"), (rec[: at + 7], "the residual bits end after 0 bytes"),
                     (rec + b"\x00", "bits left after 24 × 3 residual values"), (rec[: at + 3], "unpack"),
                     (rec[:at] + np.float32(0).tobytes() + rec[at + 4 :], "step_std 0.0"),
                     (rec[:at] + np.float32(np.nan).tobytes() + rec[at + 4 :], "step_std nan"),
                     (rec[: at + 4] + b"\x00\x00" + rec[at + 6 :], "0 × 3 residuals")]:
        with pytest.raises(AestreamError, match=r"not an aestream latent record \(.*" + why):
            decode_latent(bad)
    other = decode_latent(rec)._replace(residual=np.zeros((W - 1, 3), dtype=np.int64))
    with pytest.raises(AestreamError, match=r"latent record of 'pump-1' at 1023 carries a \(23, 3\) residual, but "
                                            r"model v0001 decodes \(24, 3\) windows: decode it with the model"):
        decode_window(other, denoiser.scorer)


def test_encode_latent_refuses_a_residual_it_cannot_carry() -> None:
    ok = np.zeros((4, 2), dtype=np.int64)
    for kwargs, why in [({"residual": ok, "step_std": 0.0}, "step_std = 0.0 is invalid"),
                        ({"residual": ok, "step_std": 1e40}, "step_std = 1e[+]40 is invalid"),
                        ({"residual": ok + 0.5, "step_std": 0.1}, "not float64 \\(4, 2\\): use quantise_residual"),
                        ({"residual": np.zeros(4, dtype=np.int64), "step_std": 0.1}, "not int64 \\(4,\\)"),
                        ({"residual": ok + MAX_RESIDUAL + 1, "step_std": 0.1}, "1073741824 steps is beyond")]:
        with pytest.raises(AestreamError, match=why):
            encode_latent("s", 0, "v1", np.zeros(2), **kwargs)  # type: ignore[arg-type]


def test_a_window_too_far_from_its_reconstruction_goes_out_without_a_residual(
        denoiser: ModelBundle, caplog: pytest.LogCaptureFixture) -> None:
    windows = sliding_windows(_truth(100), W, 8)
    windows[1:3, 5, 0] = 2000.0  # 2000 / (1e-6 × std) steps: beyond MAX_RESIDUAL
    q, fits = quantise_residual(windows, denoiser.scorer.reconstruct(windows),
                                residual_steps(1e-6, denoiser.scorer.preprocessor.std))
    assert fits.tolist() == [True, False, False] + [True] * (len(windows) - 3) and not q[1].any()
    stage = StreamsStage(lambda: denoiser, CH, latent_topic="latent", latent_residual_step_std=1e-6)
    with caplog.at_level(logging.WARNING, logger="aestream.outputs.streams"):
        records = [m.value for m in stage.on_scored(_scored(windows, denoiser.version))]
    assert [r[:4] for r in records] == [b"AEL3", b"AEL1", b"AEL1"] + [b"AEL3"] * (len(windows) - 3)
    assert len(caplog.records) == 1 and "sensor pump-1 at 1024" in caplog.text and "sent without its residual" in (
        caplog.text)


def test_each_fresh_window_gives_one_record_per_stream_keyed_by_sensor_at_the_window_end(
        denoiser: ModelBundle) -> None:
    windows = sliding_windows(_truth(40), W, 8)[:2].astype(np.float32)
    fresh = Scored(Window("pump-1", 1000, 1023, windows[0]), 1.0, 2.0, False, np.ones(3) / 3, "v0001")
    replayed = Scored(Window("pump-2", 2000, 2023, windows[1]), 1.0, 2.0, False, np.ones(3) / 3, "v0001", None, True)
    stage = StreamsStage(lambda: denoiser, CH, denoised_topic="clean", latent_topic="latent")
    out = stage.on_scored([fresh, replayed])  # a replayed window was sent before the restart: never again
    assert [(m.topic, m.key) for m in out] == [("clean", b"pump-1"), ("latent", b"pump-1")]
    doc = json.loads(out[0].value)
    assert (doc["sensor"], doc["ts"], doc["denoised"], doc["model_version"]) == ("pump-1", 1023, True, "v0001")
    assert decode_latent(out[1].value).window_end_ms == 1023
    assert stage.on_scored([replayed]) == []


def test_with_denoise_anomalies_a_window_in_alarm_is_denoised_too(denoiser: ModelBundle) -> None:
    window = sliding_windows(_truth(W) + 5.0, W)[0].astype(np.float32)
    scored = [Scored(Window("s", 0, 1, window), 9.0, 2.0, True, np.ones(3) / 3, "v0001")]
    doc = json.loads(StreamsStage(lambda: denoiser, CH, denoised_topic="clean", denoise_anomalies=True)
                     .on_scored(scored)[0].value)
    clean = denoiser.scorer.reconstruct(window[None])[0, -1]
    assert doc["denoised"] is True and doc["values"] == pytest.approx(clean.tolist(), abs=1e-5)
    assert doc["values"] != pytest.approx(window[-1].tolist(), abs=0.5)


def test_a_sensor_id_of_up_to_255_utf8_bytes_fits_a_latent_record_and_a_longer_one_is_refused() -> None:
    assert decode_latent(encode_latent("x" * 255, 0, "v1", np.zeros(2))).sensor == "x" * 255
    with pytest.raises(AestreamError, match=r"^sensor id or model version longer than 255 bytes: 'éééé"):
        encode_latent("é" * 128, 0, "v1", np.zeros(2))  # 128 characters, 256 bytes


def test_a_sensor_whose_id_is_too_long_for_a_latent_record_has_no_latent_stream_and_the_rest_go_on(
        denoiser: ModelBundle, caplog: pytest.LogCaptureFixture) -> None:
    long_id = "é" * 200  # 200 characters (readings take up to 256), 400 UTF-8 bytes
    windows = sliding_windows(_truth(W + 1), W)
    scored = _scored(windows[:1], "v0001", long_id) + _scored(windows[1:], "v0001")
    stage = StreamsStage(lambda: denoiser, CH, latent_topic="latent")
    with caplog.at_level(logging.WARNING, logger="aestream.outputs.streams"):
        out = stage.on_scored(scored) + stage.on_scored(scored)
    assert [decode_latent(m.value).sensor for m in out] == ["pump-1", "pump-1"]
    assert caplog.text.count("its id is 400 UTF-8 bytes, more than a latent record holds (255)") == 1


@pytest.mark.parametrize("median", [2**30, 2**40, 2**62 - 1])
def test_a_residual_no_encoder_writes_is_refused_not_decoded(median: int) -> None:
    """A record whose residuals are beyond ±MAX_RESIDUAL (the encoder refuses those; past int64 they wrapped
    around) was decoded into a garbage window, outside the promised bound."""
    from aestream.outputs import streams as S

    rec = S.encode_latent("pump-7", 1_767_225_600_000, "v0003", np.array([0.5], np.float32),
                          residual=np.array([[0]]), step_std=0.05)
    head = rec[: len(rec) - len(S._rice_encode(np.array([[0]])))]
    gamma = int(S._zigzag(np.array([median]))[0]) + 1  # the channel's median, Elias-gamma coded
    bits = S._bits(np.array([0, 0, 0]), np.array([5, 2 * gamma.bit_length() - 1, 1]), np.array([0, gamma, 0]))
    with pytest.raises(LatentRecordError, match=r"residuals are beyond ±1073741823"):
        S.decode_latent(head + np.packbits(bits).tobytes())


def test_what_the_stage_said_once_of_a_sensor_goes_with_the_sensor() -> None:
    from aestream.outputs.streams import StreamsStage

    stage = StreamsStage(lambda: None, ("a", "b"), latent_topic="lat")
    stage._unfit_sensors.update({"s1", "s2"})
    stage._long_ids.update({"s1", "x" * 300})
    stage.evict(["s1", "x" * 300])
    stage.forget(["s2"])
    assert stage._unfit_sensors == set() and stage._long_ids == set()
