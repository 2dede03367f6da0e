"""The alert stage's state file: JSON, written atomically (temporary file, fsync, rename)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aestream.atomic import atomic_write
from aestream.errors import AlertStateError

__all__ = ["STATE_VERSION", "read_state", "write_state"]

STATE_VERSION = 1


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Replace ``path`` with ``state`` as JSON; a crash leaves either the old file or the new one."""
    doc = json.dumps({"version": STATE_VERSION, **state}, separators=(",", ":")).encode()
    atomic_write(path, lambda f: f.write(doc))


def read_state(path: Path) -> dict[str, Any] | None:
    """The saved state, or ``None`` when there is no file yet."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise AlertStateError(f"alert state file {path} is unreadable ({e}): move it away to start with no open "
                              "episodes (recent ones are rebuilt from the replayed lookback)") from None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        found = data.get("version") if isinstance(data, dict) else type(data).__name__
        raise AlertStateError(f"alert state file {path} has version {found!r}, expected {STATE_VERSION}: move it "
                              "away to start with no open episodes")
    return data
