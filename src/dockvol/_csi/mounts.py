"""Bind mounts for staging and publishing (blocking: call them off the event loop).

mount(2) and umount2(2) directly: a stage and a publish are one bind each, and starting the
mount tool for each costs more than the rest of the call.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from .._sdk.errors import DriverError
from ..host import mounts_under

_libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_RELATIME = 0x200000
# statvfs flags that a read-only remount must repeat, or the kernel clears them.
_KEEP = (
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)


def is_mounted(path: Path) -> bool:
    """Is something mounted exactly at ``path``?"""
    return os.path.realpath(path) in mounts_under(path)


def _mount(source: Path, target: Path, flags: int, what: str) -> None:
    if _libc.mount(os.fsencode(source), os.fsencode(target), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise DriverError(f"{what}: {os.strerror(err)}")


def bind(source: Path, target: Path, *, readonly: bool) -> None:
    """Bind ``source`` onto the directory ``target``, read-only if asked (a remount: a bind
    mount takes no ro flag of its own)."""
    _mount(source, target, MS_BIND, f"cannot bind {source} to {target}")
    if not readonly:
        return
    try:
        kept = os.statvfs(target).f_flag
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY
        for st_flag, ms_flag in _KEEP:
            if kept & st_flag:
                flags |= ms_flag
        _mount(target, target, flags, f"cannot make {target} read-only")
    except BaseException:
        unbind(target)  # never leave a writable mount where a read-only one was asked
        raise


def unbind(target: Path) -> None:
    """Unmount ``target`` if something is mounted there (every layer, newest first)."""
    while is_mounted(target):
        if _libc.umount2(os.fsencode(target), 0) != 0:
            err = ctypes.get_errno()
            raise DriverError(
                f"cannot unmount {target}: {os.strerror(err)}; stop what uses it and retry"
            )
