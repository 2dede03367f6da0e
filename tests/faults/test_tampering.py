"""Model tampering: a bundle with altered weights or metadata, or a pickle payload in place of weights, is
refused with an error naming the file, and the worker keeps serving its previous model."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from aestream.config import Config
from aestream.models.store import ModelStore
from aestream.stream.codec import encode_reading
from aestream.stream.messages import Record
from aestream.worker import Worker

pytestmark = pytest.mark.faults

CHANNELS = ("temperature", "pressure", "vibration", "current")
T0 = 1_767_225_600_000


class _Payload:
    """Unpickling this runs ``touch <marker>``: a bundle must never get that far."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _rehash(d: Path) -> None:
    """Recompute manifest.json, as an attacker with write access to the store would."""
    sums = {n: hashlib.sha256((d / n).read_bytes()).hexdigest() for n in ("weights.pt", "meta.json")}
    (d / "manifest.json").write_text(json.dumps({"format": 1, "sha256": sums}))


def _flip_weights(d: Path, marker: Path) -> None:
    data = bytearray((d / "weights.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / "weights.pt").write_bytes(bytes(data))


def _edit_meta(d: Path, marker: Path) -> None:
    meta = json.loads((d / "meta.json").read_text())
    meta["threshold"] = 1e6  # silence every alarm
    (d / "meta.json").write_text(json.dumps(meta))


def _pickle_weights(d: Path, marker: Path) -> None:
    torch.save({"layer.weight": _Payload(marker)}, d / "weights.pt")
    _rehash(d)


def _raw_pickle_weights(d: Path, marker: Path) -> None:
    import pickle

    (d / "weights.pt").write_bytes(pickle.dumps(_Payload(marker)))
    _rehash(d)


def _edit_meta_and_rehash(d: Path, marker: Path) -> None:
    meta = json.loads((d / "meta.json").read_text())
    meta["hyperparameters"]["latent_size"] = 99  # weights no longer fit
    (d / "meta.json").write_text(json.dumps(meta))
    _rehash(d)


def _drop_manifest(d: Path, marker: Path) -> None:
    (d / "manifest.json").unlink()


TAMPER = {
    "weights altered": (_flip_weights, "weights.pt does not match its checksum"),
    "metadata altered": (_edit_meta, "meta.json does not match its checksum"),
    "pickle payload (torch zip)": (_pickle_weights, "weights.pt or meta.json is unusable"),
    "pickle payload (raw)": (_raw_pickle_weights, "weights.pt or meta.json is unusable"),
    "metadata altered, manifest rehashed": (_edit_meta_and_rehash, "weights.pt or meta.json is unusable"),
    "manifest removed": (_drop_manifest, "manifest.json is missing"),
}


@pytest.mark.parametrize("kind", list(TAMPER))
def test_a_tampered_bundle_is_refused_and_the_previous_model_keeps_serving(
        kind: str, train_small: Any, recording_sink: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = Config().replace(baselines={"mode": "off"}, stream={"channels": CHANNELS, "window_size": 16, "stride": 4})
    store = ModelStore(tmp_path / "models")
    bundle = train_small(cfg)
    bundle.threshold = 1e-9  # every window is an event: the serving version is visible on each
    store.publish(bundle)
    worker = Worker(cfg, None, recording_sink(), store)
    worker.refresh_model(force=True)
    assert worker.bundle is not None and worker.bundle.version == "v0001"

    store.publish(bundle, make_current=False)  # v0002, then tampered with
    tamper, reason = TAMPER[kind]
    marker = tmp_path / "payload-ran"
    tamper(store.root / "v0002", marker)
    store.set_current("v0002")
    with caplog.at_level(logging.ERROR, logger="aestream.worker"):
        worker.refresh_model(force=True)

    assert worker.bundle.version == "v0001"
    assert not marker.exists(), "the pickle payload ran"
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused and "still serving v0001" in refused[0] and reason in refused[0], refused
    assert "v0002" in refused[0]
    recs = [Record("in", 0, i, b"s", encode_reading("s", T0 + i * 1000, [1.0, 2.0, 3.0, 4.0]), 0) for i in range(16)]
    stats = worker.process(recs)
    assert [e["model_version"] for e in stats.events_out] == ["v0001"]

    shutil.rmtree(store.root / "v0002")  # once a good bundle is published again, workers follow it
    fixed = store.publish(bundle)
    worker.refresh_model(force=True)
    assert worker.bundle.version == fixed != "v0001"
