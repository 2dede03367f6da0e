"""Model bundles: ``weights.pt`` (a plain state dict), ``meta.json`` and ``manifest.json``, as a directory or
packed into one message (:func:`pack_bundle`, the models topic).

``meta.json`` holds everything but the weights: family, hyperparameters, channels, preprocessing, channel scales,
threshold and alarm rule, training metrics, the training data's time range, creation time and version.
``manifest.json`` holds the SHA-256 of the other two files; loading checks it first, so a missing or altered piece
is refused with an error naming the file. Weights load with ``torch.load(..., weights_only=True)``: a bundle
can never run code.

Checksums catch corruption, not tampering: whoever can change ``meta.json`` can recompute them. With a key
(``AESTREAM_MODEL_KEY``, shared by the trainer and the workers) the manifest also carries an HMAC-SHA256 of its
checksums, and a bundle without a valid one is refused: only a holder of the key can make a bundle that loads.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aestream.detect.features import Preprocessor
from aestream.detect.scoring import Scorer
from aestream.errors import BundleError
from aestream.models import build_model

__all__ = ["BUNDLE_FILES", "ModelBundle", "bundle_files", "bundle_from_files", "load_bundle", "pack_bundle",
           "save_bundle", "scorer_from_dict", "scorer_to_dict", "unpack_bundle"]

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


def bundle_files(bundle: ModelBundle, key: bytes | None = None) -> dict[str, bytes]:
    """The bundle's three files by name; with ``key`` the manifest is signed (HMAC-SHA256 of its checksums)."""
    model = bundle.scorer.model
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
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
    files = {"weights.pt": buf.getvalue(), "meta.json": json.dumps(meta, indent=2, sort_keys=True).encode()}
    hashes = {name: hashlib.sha256(files[name]).hexdigest() for name in BUNDLE_FILES}
    manifest: dict[str, Any] = {"format": FORMAT, "sha256": hashes}
    if key:
        manifest["hmac_sha256"] = _sign(key, hashes)
    files["manifest.json"] = json.dumps(manifest, indent=2).encode()
    return files


def save_bundle(bundle: ModelBundle, path: str | os.PathLike[str], key: bytes | None = None) -> Path:
    """Write the bundle's files into ``path`` (created), each fsynced. Returns the path."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in bundle_files(bundle, key).items():
        with open(out / name, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return out


def load_bundle(path: str | os.PathLike[str], device: torch.device | str = "cpu",
                key: bytes | None = None, version: str | None = None) -> ModelBundle:
    """Load and verify a bundle directory (stored as ``version``, if given: see :func:`bundle_from_files`); raises
    :class:`BundleError` naming the file at fault."""
    src = Path(path)
    try:
        files = {name: (src / name).read_bytes() for name in (*BUNDLE_FILES, "manifest.json")
                 if (src / name).is_file()}
    except OSError as e:  # e.g. a bundle another user published, owner-only: a refused version, not a crash
        raise BundleError(f"model bundle {src} cannot be read ({e}): give this process read access to it") from None
    return bundle_from_files(files, f"model bundle {src}", device, key, version)


def bundle_from_files(files: dict[str, bytes], where: str, device: torch.device | str = "cpu",
                      key: bytes | None = None, version: str | None = None) -> ModelBundle:
    """The bundle in ``files`` (as :func:`bundle_files` made them), checked against its manifest and, with ``key``,
    its signature; ``where`` names it in errors. ``version``: the version it is stored as, which its own (signed)
    ``meta.json`` must name: an older bundle copied under a newer version is refused, not served (a worker would
    see its version differ from the store's current one at every check, and swap it in again and again)."""
    manifest = _parse_json(files, "manifest.json", where)
    hashes = manifest.get("sha256", {})
    for name in BUNDLE_FILES:
        if name not in files:
            raise BundleError(f"{where}: {name} is missing; republish the model (aestream train)")
        if not isinstance(hashes, dict) or hashes.get(name) != hashlib.sha256(files[name]).hexdigest():
            raise BundleError(f"{where}: {name} does not match its checksum in manifest.json "
                              "(altered or corrupt); republish or roll back to another version")
    if key:
        mac = manifest.get("hmac_sha256")
        if not isinstance(mac, str) or not hmac.compare_digest(mac, _sign(key, hashes)):
            why = "is not signed" if mac is None else "carries a signature that does not match its content"
            raise BundleError(f"{where} {why} with the key in AESTREAM_MODEL_KEY (altered, or made with another "
                              "key): refused; publish it again with the fleet's key, or roll back")
    meta = _parse_json(files, "meta.json", where)
    try:
        state = torch.load(io.BytesIO(files["weights.pt"]), map_location="cpu", weights_only=True)
        model = build_model(meta["family"], **meta["hyperparameters"])
        model.load_state_dict(state, strict=True)
        scorer = Scorer(model, Preprocessor.from_dict(meta["preprocessor"]),
                        np.asarray(meta["channel_scale"], dtype=np.float64), meta["score_reduce"], device)
        bundle = ModelBundle(scorer, float(meta["threshold"]), tuple(meta["channels"]), dict(meta["alarm"]),
                             dict(meta["info"]), str(meta["version"]))
    except BundleError:
        raise
    except Exception as e:  # any unreadable piece is a bad bundle, not a crash
        raise BundleError(f"{where}: weights.pt or meta.json is unusable ({type(e).__name__}: {e})") from None
    if version is not None and bundle.version != version:
        raise BundleError(f"{where} is stored as {version} but is version {bundle.version} (a copy of another "
                          "version's bundle): refused; publish it again, or roll back to the version it is")
    return bundle


def pack_bundle(files: dict[str, bytes]) -> bytes:
    """The files as one message: a JSON object of base64 strings (zlib-compressed).

    >>> unpack_bundle(pack_bundle({"meta.json": b"{}"}), "x") == {"meta.json": b"{}"}
    True
    """
    return zlib.compress(json.dumps({n: base64.b64encode(b).decode() for n, b in files.items()}).encode())


def unpack_bundle(data: bytes, where: str) -> dict[str, bytes]:
    """The files :func:`pack_bundle` packed; a message that is not one is a :class:`BundleError`."""
    try:
        doc = json.loads(zlib.decompress(data))
        return {str(n): base64.b64decode(b, validate=True) for n, b in doc.items()}
    except (zlib.error, ValueError, TypeError, AttributeError) as e:
        raise BundleError(f"{where} is not a packed model bundle ({type(e).__name__}: {e})") from None


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


def _parse_json(files: dict[str, bytes], name: str, where: str) -> dict[str, Any]:
    if name not in files:
        raise BundleError(f"{where}: {name} is missing; republish the model")
    try:
        doc = json.loads(files[name])
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"{where}: {name} is not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise BundleError(f"{where}: {name} must hold a JSON object")
    return doc


def _sign(key: bytes, hashes: Any) -> str:
    """HMAC-SHA256 over the manifest's checksums (canonical JSON), which pin both other files."""
    return hmac.new(key, json.dumps(hashes, sort_keys=True).encode(), hashlib.sha256).hexdigest()
