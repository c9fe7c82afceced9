"""Bind mounts for staging and publishing (blocking: call them off the event loop)."""

from __future__ import annotations

import os
from pathlib import Path

from ..host import mounts_under, run


def is_mounted(path: Path) -> bool:
    """Is something mounted exactly at ``path``?"""
    return os.path.realpath(path) in mounts_under(path)


def bind(source: Path, target: Path, *, readonly: bool) -> None:
    """Bind ``source`` onto the directory ``target``, read-only if asked (two steps: a bind
    mount takes no ro flag of its own)."""
    run("mount", "--bind", str(source), str(target), what=f"binding {source} to {target}")
    if readonly:
        try:
            run(
                "mount", "-o", "remount,bind,ro", str(target),
                what=f"making {target} read-only",
            )  # fmt: skip
        except BaseException:
            unbind(target)  # never leave a writable mount where a read-only one was asked
            raise


def unbind(target: Path) -> None:
    """Unmount ``target`` if something is mounted there (every layer, newest first)."""
    while is_mounted(target):
        run("umount", str(target), what=f"unmounting {target}")


def is_read_only(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
