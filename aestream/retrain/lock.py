"""Who trains: a lock file beside the shared model store, created with ``O_CREAT | O_EXCL``.

Every worker's scheduler fires; the one that creates ``<model_dir>/.retrain.lock`` trains, the others skip that
run. A lock whose holder crashed mid-retrain is broken by the next worker that finds it: at once when the holder
ran on this host (same host name) and its process is gone, else once the lock is older than ``stale_s``. Taking,
judging, breaking and releasing the lock happen under an ``flock`` of ``<model_dir>/.retrain.guard`` (held for those
few file operations, not while training): two workers that find a stale lock at once break it once, and only one
of them takes it. Where the file system has no ``flock`` the lock relies on its own checks alone.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> a, b = TrainLock(d, stale_s=60), TrainLock(d, stale_s=60)
>>> a.acquire(), b.acquire()
(True, False)
>>> a.release(); b.acquire()
True
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["TrainLock"]

log = logging.getLogger(__name__)

LOCK_NAME = ".retrain.lock"
GUARD_NAME = ".retrain.guard"
_PROCESS = uuid.uuid4().hex  # this process: a lock held under our pid without it is a previous process's (a restart)


def _pid_namespace() -> str | None:
    """This process's PID namespace (Linux), ``None`` where it cannot be told: two containers given one host name
    (host networking, one ``hostname:``) each number their processes from 1, and see none of the other's."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


_PID_NS = _pid_namespace()


class TrainLock:
    """An exclusive, crash-tolerant lock file in ``directory`` (one holder across all workers sharing it)."""

    def __init__(self, directory: str | os.PathLike[str], stale_s: float) -> None:
        self.path = Path(directory) / LOCK_NAME
        self._guard_path = Path(directory) / GUARD_NAME
        self.stale_s = stale_s
        self._token: str | None = None

    def acquire(self) -> bool:
        """Take the lock if it is free or stale; ``False`` if another holder has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._guarded():
            return self._acquire()

    def _acquire(self) -> bool:
        token = uuid.uuid4().hex
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._break_if_stale():
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"token": token, "host": socket.gethostname(), "pidns": _PID_NS, "pid": os.getpid(),
                           "process": _PROCESS,
                           "since": time.time()}, f)
            self._token = token
            return True
        return False

    def release(self) -> None:
        """Remove the lock if this object still holds it."""
        if self._token is None:
            return
        with self._guarded():
            try:
                if json.loads(self.path.read_text()).get("token") == self._token:
                    self.path.unlink()
            except (FileNotFoundError, ValueError):
                pass
        self._token = None

    @contextlib.contextmanager
    def _guarded(self) -> Iterator[None]:
        """Hold the guard's ``flock`` (every taker of the lock on this file system waits its turn, for a few file
        operations); without ``flock`` support there, go on unguarded."""
        try:
            fd = os.open(self._guard_path, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as e:
            log.warning("retrain lock guard %s cannot be opened (%s): taking the lock unguarded", self._guard_path, e)
            yield
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                log.warning("retrain lock guard %s: no flock on this file system (%s): taking the lock unguarded",
                            self._guard_path, e)
            yield
        finally:
            os.close(fd)  # releases the flock

    def _break_if_stale(self) -> bool:
        """Remove the lock if it is stale (its age and holder read from one open). Unguarded, two workers may find
        it stale at once: each moves it aside under a name of its own (one rename wins) and checks that what it
        moved is the lock it judged, by its token; a fresh lock taken meanwhile by a third is put back."""
        try:
            with open(self.path, "rb") as f:
                age = time.time() - os.fstat(f.fileno()).st_mtime
                raw = f.read()
        except FileNotFoundError:
            return True
        try:
            holder = json.loads(raw or b"{}")
        except ValueError:  # being written, or damaged: judged by its age alone
            holder = {}
        if not isinstance(holder, dict):
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
    if holder.get("pidns") != _PID_NS:  # another container's processes: neither its pid nor their absence tells
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
