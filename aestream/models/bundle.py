"""Model bundles: a directory with ``weights.pt`` (a plain state dict), ``meta.json`` and ``manifest.json``.

``meta.json`` holds everything but the weights: family, hyperparameters, channels, preprocessing, channel scales,
threshold and alarm rule, training metrics, the training data's time range, creation time and version.
``manifest.json`` holds the SHA-256 of the other two files; loading checks it first, so a missing or altered piece
is refused with an error naming the file. Weights load with ``torch.load(..., weights_only=True)``: a bundle
can never run code.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aestream.detect.features import Preprocessor
from aestream.detect.scoring import Scorer
from aestream.errors import BundleError
from aestream.models import build_model

__all__ = ["BUNDLE_FILES", "ModelBundle", "load_bundle", "save_bundle", "scorer_from_dict", "scorer_to_dict"]

FORMAT = 1
BUNDLE_FILES = ("weights.pt", "meta.json")


@dataclass
class ModelBundle:
    """A scorer plus its alarm settings and provenance."""

    scorer: Scorer
    threshold: float
    channels: tuple[str, ...]
    alarm: dict[str, Any] = field(default_factory=lambda: {"k": 1, "n": 1, "smoothing": 1})
    info: dict[str, Any] = field(default_factory=dict)
    version: str = ""

    @property
    def family(self) -> str:
        return self.scorer.model.family

    @property
    def window_size(self) -> int:
        return self.scorer.model.window_size


def save_bundle(bundle: ModelBundle, path: str | os.PathLike[str]) -> Path:
    """Write the bundle's files into ``path`` (created), each fsynced. Returns the path."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model = bundle.scorer.model
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "version": bundle.version,
        "family": model.family,
        "hyperparameters": model.hyperparameters(),
        "channels": list(bundle.channels),
        "preprocessor": bundle.scorer.preprocessor.to_dict(),
        "channel_scale": bundle.scorer.channel_scale.tolist(),
        "score_reduce": bundle.scorer.score_reduce,
        "threshold": bundle.threshold,
        "alarm": bundle.alarm,
        "info": bundle.info,
    }
    torch.save(state, out / "weights.pt")
    (out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    manifest = {name: _sha256(out / name) for name in BUNDLE_FILES}
    (out / "manifest.json").write_text(json.dumps({"format": FORMAT, "sha256": manifest}, indent=2))
    for name in (*BUNDLE_FILES, "manifest.json"):
        with open(out / name, "rb") as f:
            os.fsync(f.fileno())
    return out


def load_bundle(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> ModelBundle:
    """Load and verify a bundle; raises :class:`BundleError` naming the file at fault."""
    src = Path(path)
    manifest = _read_json(src / "manifest.json")
    hashes = manifest.get("sha256", {})
    for name in BUNDLE_FILES:
        f = src / name
        if not f.is_file():
            raise BundleError(f"model bundle {src}: {name} is missing; republish the model (aestream train)")
        if hashes.get(name) != _sha256(f):
            raise BundleError(f"model bundle {src}: {name} does not match its checksum in manifest.json "
                              "(altered or corrupt); republish or roll back to another version")
    meta = _read_json(src / "meta.json")
    try:
        state = torch.load(src / "weights.pt", map_location="cpu", weights_only=True)
        model = build_model(meta["family"], **meta["hyperparameters"])
        model.load_state_dict(state, strict=True)
        scorer = Scorer(model, Preprocessor.from_dict(meta["preprocessor"]),
                        np.asarray(meta["channel_scale"], dtype=np.float64), meta["score_reduce"], device)
        return ModelBundle(scorer, float(meta["threshold"]), tuple(meta["channels"]), dict(meta["alarm"]),
                           dict(meta["info"]), str(meta["version"]))
    except BundleError:
        raise
    except Exception as e:  # any unreadable piece is a bad bundle, not a crash
        raise BundleError(f"model bundle {src}: weights.pt or meta.json is unusable ({type(e).__name__}: {e})") \
            from None


def scorer_to_dict(scorer: Scorer) -> dict[str, Any]:
    """A scorer as JSON-ready data (its weights base64-encoded): for state that travels in a message."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in scorer.model.state_dict().items()}, buf)
    return {"family": scorer.model.family, "hyperparameters": scorer.model.hyperparameters(),
            "preprocessor": scorer.preprocessor.to_dict(), "channel_scale": scorer.channel_scale.tolist(),
            "score_reduce": scorer.score_reduce, "weights": base64.b64encode(buf.getvalue()).decode()}


def scorer_from_dict(d: dict[str, Any], device: torch.device | str = "cpu") -> Scorer:
    """The scorer :func:`scorer_to_dict` wrote; weights load with ``weights_only=True`` (no code runs)."""
    state = torch.load(io.BytesIO(base64.b64decode(d["weights"])), map_location="cpu", weights_only=True)
    model = build_model(d["family"], **d["hyperparameters"])
    model.load_state_dict(state, strict=True)
    return Scorer(model, Preprocessor.from_dict(d["preprocessor"]), np.asarray(d["channel_scale"], dtype=np.float64),
                  d["score_reduce"], device)


def _read_json(f: Path) -> dict[str, Any]:
    try:
        doc = json.loads(f.read_text())
    except FileNotFoundError:
        raise BundleError(f"model bundle {f.parent}: {f.name} is missing; republish the model") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"model bundle {f.parent}: {f.name} is not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise BundleError(f"model bundle {f.parent}: {f.name} must hold a JSON object")
    return doc


def _sha256(f: Path) -> str:
    return hashlib.sha256(f.read_bytes()).hexdigest()
