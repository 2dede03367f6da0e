"""Who trains: a lock file beside the shared model store, created with ``O_CREAT | O_EXCL``.

Every worker's scheduler fires; the one that creates ``<model_dir>/.retrain.lock`` trains, the others skip that
run. A lock whose holder crashed mid-retrain is broken by the next worker that finds it: at once when the holder
ran on this host (same host name) and its process is gone, else once the lock is older than ``stale_s``.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> a, b = TrainLock(d, stale_s=60), TrainLock(d, stale_s=60)
>>> a.acquire(), b.acquire()
(True, False)
>>> a.release(); b.acquire()
True
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path

__all__ = ["TrainLock"]

log = logging.getLogger(__name__)

LOCK_NAME = ".retrain.lock"
_PROCESS = uuid.uuid4().hex  # this process: a lock held under our pid without it is a previous process's (a restart)


class TrainLock:
    """An exclusive, crash-tolerant lock file in ``directory`` (one holder across all workers sharing it)."""

    def __init__(self, directory: str | os.PathLike[str], stale_s: float) -> None:
        self.path = Path(directory) / LOCK_NAME
        self.stale_s = stale_s
        self._token: str | None = None

    def acquire(self) -> bool:
        """Take the lock if it is free or stale; ``False`` if another holder has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._break_if_stale():
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"token": token, "host": socket.gethostname(), "pid": os.getpid(), "process": _PROCESS,
                           "since": time.time()}, f)
            self._token = token
            return True
        return False

    def release(self) -> None:
        """Remove the lock if this object still holds it."""
        if self._token is None:
            return
        try:
            if json.loads(self.path.read_text()).get("token") == self._token:
                self.path.unlink()
        except (FileNotFoundError, ValueError):
            pass
        self._token = None

    def _break_if_stale(self) -> bool:
        """Remove the lock if it is stale. Two workers may find it stale at once: each moves it aside under a name
        of its own (one rename wins) and checks that what it moved is the lock it judged, by its token; a fresh
        lock taken meanwhile by a third is put back."""
        try:
            age = time.time() - self.path.stat().st_mtime
            holder = json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            return True
        except ValueError:  # being written, or damaged: judged by its age alone
            holder = {}
        if age > self.stale_s:
            why = f"{age:.0f} s old, retrain.timeout_s + margin is {self.stale_s:.0f} s"
        elif _gone(holder):
            why = f"its holder, process {holder['pid']} on this host, is gone (killed while it trained)"
        else:
            return False
        judged = holder.get("token")
        aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True  # another worker broke it first
        try:
            moved = json.loads(aside.read_text() or "{}").get("token")
        except ValueError:
            moved = None
        if moved != judged:  # not the lock we judged: a fresh one, taken since; give it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        log.warning("broke the stale retrain lock %s (%s)", self.path, why)
        return True


def _gone(holder: dict[str, object]) -> bool:
    """Whether the lock's holder ran on this host and its process no longer does (a pid in use is taken to be it)."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return holder.get("process") != _PROCESS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: alive
        return False
    return False
