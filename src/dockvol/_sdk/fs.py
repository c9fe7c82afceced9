"""Filesystem helpers that keep a driver inside its root: safe paths, deletes that stop at mounts."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from .errors import DriverError


def child(root: Path, key: str) -> Path:
    """``root / key`` for a key made by the framework: one plain component, never a symlink."""
    if not key or "/" in key or key in (".", "..") or "\0" in key:
        raise DriverError(f"refusing unsafe volume key {key!r}")
    return root / key


def is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (from /proc/self/mountinfo)."""
    prefix = os.path.realpath(path)
    found = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                target = _unescape(line.split(" ", 5)[4])
                if target == prefix or target.startswith(prefix + "/"):
                    found.append(target)
    except OSError:
        pass
    return found


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")


def remove_tree(root: Path, path: Path) -> None:
    """Delete ``path`` (a directory directly under ``root``) without following symlinks out
    of it and without deleting anything through a mount below it."""
    if path.parent != root:
        raise DriverError(f"refusing to delete {path}: it is not directly under {root}")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise DriverError(
            f"refusing to delete {path}: it is not a plain directory (a symlink or file was put "
            "in its place); inspect it and remove it by hand"
        )
    live = mounts_under(path)
    if live:
        raise DriverError(
            f"refusing to delete {path}: something is still mounted there ({', '.join(live[:3])}); "
            "unmount it first"
        )
    if not shutil.rmtree.avoids_symlink_attacks:  # pragma: no cover - Linux always has it
        raise DriverError("this platform cannot delete directory trees safely")
    shutil.rmtree(path)
