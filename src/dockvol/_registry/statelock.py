"""One process per state directory: an exclusive lock taken before anything else, held for life.

Two plugins on one state would both reconcile, mount and delete the same volumes. The lock is
``flock`` on ``STATE/lock``: the kernel drops it when the process dies (even by kill -9), so a
crash never leaves a stale lock behind. The file holds the owner's pid, to name it in the refusal.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "lock"


class StateLocked(Exception):
    """Another live process holds the state directory."""


class StateLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateLocked(
                f"the state directory {self.path.parent} is in use by another dockvol process "
                f"(pid {holder}); stop that plugin first, or give this one its own --state "
                "(and --root)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None
