"""Crash-safe file replacement: write a temporary file beside the target, fsync it, rename it over the target,
fsync the directory. A crash leaves either the old file or the new one, never a torn one.

Files and folders are created with the modes the process's umask gives (``tempfile``'s would be owner-only): a
model store or a state folder shared by processes of several users in one group stays readable to them all.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "fsync_dir", "make_temp_dir"]


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Replace ``path`` with what ``write`` writes into the binary file it is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}-{uuid.uuid4().hex[:12]}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # as open() would: the umask decides
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or creation inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A new, empty folder in ``parent`` named ``prefix`` and a random suffix, with the mode the umask gives."""
    path = parent / f"{prefix}{uuid.uuid4().hex[:12]}"
    path.mkdir(mode=0o777)
    return path
