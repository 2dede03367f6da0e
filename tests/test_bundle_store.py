from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from aestream.detect.features import Preprocessor
from aestream.detect.scoring import Scorer
from aestream.errors import BundleError
from aestream.models import build_model
from aestream.models.bundle import ModelBundle, load_bundle, save_bundle
from aestream.models.store import ModelStore

CH = ("a", "b")


def _bundle(threshold: float = 2.0) -> ModelBundle:
    torch.manual_seed(0)
    model = build_model("vanilla", window_size=4, n_channels=2, latent_size=2, hidden_size=8)
    pre = Preprocessor(np.zeros(2), np.ones(2), np.zeros(2, dtype=bool))
    return ModelBundle(Scorer(model, pre), threshold, CH)


def test_altered_or_missing_pieces_are_refused_naming_the_file(tmp_path: Path) -> None:
    path = save_bundle(_bundle(), tmp_path / "b")
    meta = json.loads((path / "meta.json").read_text())
    meta["threshold"] = 99.0
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"meta.json does not match its checksum"):
        load_bundle(path)
    path2 = save_bundle(_bundle(), tmp_path / "c")
    (path2 / "weights.pt").unlink()
    with pytest.raises(BundleError, match=r"weights.pt is missing"):
        load_bundle(path2)


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("pwned",))


def test_a_pickle_payload_in_place_of_weights_never_runs(tmp_path: Path) -> None:
    path = save_bundle(_bundle(), tmp_path / "b")
    torch.save({"x": _Evil()}, path / "weights.pt")  # a pickle with a code-running payload
    manifest = json.loads((path / "manifest.json").read_text())
    import hashlib

    manifest["sha256"]["weights.pt"] = hashlib.sha256((path / "weights.pt").read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))  # even with a forged manifest
    with pytest.raises(BundleError, match=r"weights.pt or meta.json is unusable \(UnpicklingError"):
        load_bundle(path)
    assert pickle.dumps(1)  # (pickle itself still works: only the bundle loader refuses)


def test_store_publishes_versions_points_current_and_rolls_back(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models", keep=3)
    assert store.current() is None
    with pytest.raises(BundleError, match="no model is published"):
        store.load()
    versions = [store.publish(_bundle(threshold=float(i))) for i in range(1, 5)]
    assert versions == ["v0001", "v0002", "v0003", "v0004"]
    assert store.versions() == ["v0002", "v0003", "v0004"]  # the last 3 kept
    assert store.current() == "v0004" and store.load().threshold == 4.0
    assert store.rollback() == "v0003" and store.load().version == "v0003"
    assert store.rollback("v0004") == "v0004"
    with pytest.raises(BundleError, match="model version v0009 is not in"):
        store.rollback("v0009")
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]  # no temp leftovers


KEY = b"fleet secret"


def _tamper_and_recompute(path: Path) -> None:
    """What an attacker with write access does: change the threshold and recompute the manifest's checksums."""
    import hashlib

    meta = json.loads((path / "meta.json").read_text())
    meta["threshold"] = 1e9  # nothing would ever alarm again
    (path / "meta.json").write_text(json.dumps(meta))
    manifest = json.loads((path / "manifest.json").read_text())
    for name in ("meta.json", "weights.pt"):
        manifest["sha256"][name] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_a_changed_threshold_with_a_recomputed_manifest_is_refused_when_bundles_are_signed(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models", key=KEY)
    version = store.publish(_bundle(threshold=2.0))
    assert store.load().threshold == 2.0
    _tamper_and_recompute(store.root / version)
    with pytest.raises(BundleError, match=r"signature that does not match its content"):
        store.load()
    # the checksums alone cannot tell: without the key the same bundle loads, with its new threshold
    assert ModelStore(tmp_path / "models").load().threshold == 1e9


def test_with_a_key_an_unsigned_or_otherwise_signed_bundle_is_refused(tmp_path: Path) -> None:
    ModelStore(tmp_path / "plain").publish(_bundle())
    with pytest.raises(BundleError, match=r"is not signed"):
        ModelStore(tmp_path / "plain", key=KEY).load()
    ModelStore(tmp_path / "other", key=b"another key").publish(_bundle())
    with pytest.raises(BundleError, match=r"does not match"):
        ModelStore(tmp_path / "other", key=KEY).load()


def test_a_packed_bundle_round_trips_and_a_garbled_one_is_a_bundle_error() -> None:
    from aestream.models.bundle import bundle_files, bundle_from_files, pack_bundle, unpack_bundle

    files = unpack_bundle(pack_bundle(bundle_files(_bundle(threshold=3.0), KEY)), "m")
    assert bundle_from_files(files, "m", key=KEY).threshold == 3.0
    with pytest.raises(BundleError, match=r"is not a packed model bundle"):
        unpack_bundle(b"\x00garbage", "message 7")


def test_a_rollback_holds_until_resume_and_a_publish_meanwhile_does_not_serve(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    for _ in range(3):
        store.publish(_bundle())
    assert store.rollback() == "v0002" and store.held() == "v0002"
    assert store.publish(_bundle()) == "v0004" and store.current() == "v0002", "the hold wins over a publish"
    assert store.resume() == "v0002" and store.held() is None and store.current() == "v0002"
    assert store.resume() is None
    assert store.publish(_bundle()) == "v0005" and store.current() == "v0005"


def test_a_publish_whose_write_fails_leaves_no_half_bundle_and_the_next_one_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import aestream.models.store as store_module

    store = ModelStore(tmp_path / "models")
    assert store.publish(_bundle()) == "v0001"

    def full_disk(bundle: ModelBundle, path: Path, key: bytes | None = None) -> Path:
        (Path(path) / "weights.pt").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "save_bundle", full_disk)
    with pytest.raises(OSError, match="No space left"):
        store.publish(_bundle())
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["CURRENT", "v0001"]
    monkeypatch.undo()
    assert store.publish(_bundle()) == "v0002" and store.current() == "v0002"


def test_an_empty_store_or_a_file_in_its_place_says_so(tmp_path: Path) -> None:
    empty = ModelStore(tmp_path / "models")
    with pytest.raises(BundleError, match=r"no model is published in .*: nothing to roll back to"):
        empty.rollback()
    with pytest.raises(BundleError, match=r"model version v0009 is not in .*; none is published: run `aestream "
                                          r"train` first"):
        empty.load("v0009")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BundleError, match=r"the model store .*afile is a file, not a folder: set paths.model_dir"):
        ModelStore(tmp_path / "afile")


def test_a_store_s_files_and_folders_take_the_umask_s_modes(tmp_path: Path) -> None:
    import os

    old = os.umask(0o027)  # a group that shares the store: workers run as other users of it
    try:
        store = ModelStore(tmp_path / "models")
        store.publish(_bundle())
        store.publish(_bundle())
        store.rollback()
    finally:
        os.umask(old)
    root = tmp_path / "models"
    modes = {p.name: p.stat().st_mode & 0o777 for p in (root, root / "v0001", root / "CURRENT", root / "HOLD")}
    assert modes == {"models": 0o750, "v0001": 0o750, "CURRENT": 0o640, "HOLD": 0o640}, modes


def test_a_store_file_or_bundle_that_cannot_be_read_is_a_bundle_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ModelStore(tmp_path / "models")
    store.publish(_bundle())
    real = Path.read_bytes

    def owner_only(path: Path) -> bytes:  # as a file another user published with mode 0600 (tests run as root)
        if path.name == "weights.pt":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", owner_only)
    with pytest.raises(BundleError, match=r"model bundle .*v0001 cannot be read \(\[Errno 13\] Permission denied"):
        store.load("v0001")
    monkeypatch.undo()
    (tmp_path / "models" / "CURRENT").unlink()
    (tmp_path / "models" / "CURRENT").mkdir()  # unreadable as a file
    with pytest.raises(BundleError, match=r"the model store's CURRENT file in .* cannot be read"):
        store.current()


def test_a_bundle_copied_under_another_version_is_refused(tmp_path: Path) -> None:
    import shutil

    store = ModelStore(tmp_path / "models")
    store.publish(_bundle())
    store.publish(_bundle(threshold=3.0))
    shutil.copytree(tmp_path / "models" / "v0001", tmp_path / "models" / "v0003")  # an old bundle as a new one
    store.set_current("v0003")
    with pytest.raises(BundleError, match=r"model bundle .*v0003 is stored as v0003 but is version v0001 \(a copy"):
        store.load()
    assert store.load("v0002").version == "v0002"
