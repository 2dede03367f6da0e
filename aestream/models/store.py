"""The model store: versioned bundles under one directory, a ``CURRENT`` pointer, atomic publish.

Layout: ``<root>/v0001/…`` (one bundle per version) and ``<root>/CURRENT`` (the serving version's name).
A publish writes the bundle into a temporary directory, fsyncs it, renames it into place, then replaces
``CURRENT`` atomically; readers therefore see either the old version or the whole new one. Workers sharing the
directory (a volume) all follow ``CURRENT``.

A rollback also writes ``<root>/HOLD``: scheduled retraining publishes nothing until an operator lifts it
(:meth:`ModelStore.resume`, ``aestream models resume``). The same interface over a Kafka topic, for workers that
share no volume, is :class:`aestream.kafka.models_topic.KafkaModelStore`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from aestream.atomic import atomic_write, fsync_dir, make_temp_dir
from aestream.errors import BundleError
from aestream.models.bundle import ModelBundle, load_bundle, save_bundle

__all__ = ["ModelStore"]

_VERSION = re.compile(r"^v(\d{4,})$")


class ModelStore:
    """Versioned model bundles in ``root``; keeps the last ``keep`` versions (and always the current one)."""

    def __init__(self, root: str | os.PathLike[str], keep: int = 10, key: bytes | None = None) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise BundleError(f"the model store {self.root} is a file, not a folder: set paths.model_dir to a "
                              "folder (created at the first publish)")
        self.keep = keep
        self.key = key  # signs what is published and is required of what is loaded

    def __str__(self) -> str:
        return str(self.root)

    def versions(self) -> list[str]:
        """Published versions, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p.name for p in self.root.iterdir() if p.is_dir() and _VERSION.match(p.name)]
        return sorted(found, key=lambda v: int(v[1:]))

    def current(self) -> str | None:
        """The serving version (the one a rollback holds, else ``CURRENT``), or ``None`` when nothing is
        published."""
        held = self.held()
        if held is not None:
            return held
        return self._pointer("CURRENT")

    def load(self, version: str | None = None, device: str = "cpu") -> ModelBundle:
        """Load ``version`` (default: the current one)."""
        v = version or self.current()
        if v is None:
            raise BundleError(f"no model is published in {self.root}: run `aestream train` first")
        if not (self.root / v).is_dir():
            raise BundleError(f"model version {v} is not in {self.root}; {self._known()}")
        return load_bundle(self.root / v, device, self.key, v)

    def meta(self, version: str) -> dict[str, Any]:
        """``version``'s ``meta.json`` (unverified: for listing)."""
        try:
            doc: dict[str, Any] = json.loads((self.root / version / "meta.json").read_text())
            return doc
        except (OSError, ValueError) as e:
            raise BundleError(f"model version {version} in {self.root}: meta.json is unreadable ({e})") from None

    def publish(self, bundle: ModelBundle, make_current: bool = True) -> str:
        """Store ``bundle`` as the next version (its ``version`` is set) and, by default, make it current."""
        self.root.mkdir(parents=True, exist_ok=True)
        while True:  # two publishers may pick the same number: the rename into place decides, the loser goes on
            existing = self.versions()
            version = f"v{(int(existing[-1][1:]) + 1 if existing else 1):04d}"
            bundle.version = version
            tmp = make_temp_dir(self.root, f".{version}-")
            try:
                save_bundle(bundle, tmp, self.key)
                fsync_dir(tmp)  # its files' names too, before the rename makes it a version
                os.rename(tmp, self.root / version)  # fails onto a non-empty directory
                break
            except BaseException as e:
                shutil.rmtree(tmp, ignore_errors=True)  # a failed write (a full disk) leaves no half bundle behind
                if not (isinstance(e, OSError) and (self.root / version).is_dir()):
                    raise
        fsync_dir(self.root)
        if make_current:
            self.set_current(version)
        self._prune()
        return version

    def set_current(self, version: str) -> None:
        """Point ``CURRENT`` at ``version`` atomically (rename over the old pointer)."""
        if not (self.root / version).is_dir():
            raise BundleError(f"model version {version} is not in {self.root}; {self._known()}")
        atomic_write(self.root / "CURRENT", lambda f: f.write(f"{version}\n".encode()))

    def held(self) -> str | None:
        """The version a rollback holds current (retraining publishes nothing meanwhile), or ``None``."""
        return self._pointer("HOLD")

    def _pointer(self, name: str) -> str | None:
        """The version the file ``name`` names, ``None`` without one; :class:`BundleError` when it is unreadable."""
        try:
            return (self.root / name).read_text().strip() or None
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            raise BundleError(f"the model store's {name} file in {self.root} cannot be read ({e}): give this "
                              "process read access to it") from None

    def resume(self) -> str | None:
        """Lift a rollback's hold: the held version serves until the next publish. Returns it (``None``: no hold)."""
        held = self.held()
        if held is not None:
            self.set_current(held)
        (self.root / "HOLD").unlink(missing_ok=True)
        return held

    def rollback(self, version: str | None = None) -> str:
        """Make ``version`` current, or by default the version published before the current one, and hold it
        there until :meth:`resume`."""
        if version is None:
            cur = self.current()
            if cur is None:
                raise BundleError(f"no model is published in {self.root}: nothing to roll back to")
            older = [v for v in self.versions() if int(v[1:]) < int(cur[1:])]
            if not older:
                raise BundleError(f"no version older than {cur} to roll back to in {self.root}")
            version = older[-1]
        self.load(version)  # refuse to point at a missing or broken bundle
        atomic_write(self.root / "HOLD", lambda f: f.write(f"{version}\n".encode()))
        self.set_current(version)
        return version

    def _known(self) -> str:
        versions = self.versions()
        return f"known: {', '.join(versions)}" if versions else "none is published: run `aestream train` first"

    def _prune(self) -> None:
        cur = self.current()
        for v in self.versions()[: -self.keep]:
            if v != cur:
                shutil.rmtree(self.root / v, ignore_errors=True)
