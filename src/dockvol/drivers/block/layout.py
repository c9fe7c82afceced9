"""Where a block volume's files live, and the small facts every part of the driver needs."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dockvol import DriverError, SecretRef, Volume

from . import encryption
from .filesystems import FILESYSTEMS, Filesystem

#: The size of a volume created without ``-o size=``: sparse, so it costs only what is written.
DEFAULT_SIZE: Final = 10 << 30
#: Sizes are whole MiB.
SIZE_ALIGN: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class Layout:
    """``images/<key>.img`` under the root; mounts under ``mounts`` (the root's own, or with a
    shared root this node's ``local_dir``). ``clustered``: the root is shared by several hosts."""

    root: Path
    images: Path
    mounts: Path
    clustered: bool

    def key(self, volume: Volume) -> str:
        key = volume.key
        if not key or "/" in key or "\0" in key or key in (".", ".."):
            raise DriverError(f"volume {volume.name!r} has an unsafe key {key!r}; this is a bug")
        return key

    def image(self, volume: Volume) -> Path:
        return self.images / f"{self.key(volume)}.img"

    def mountpoint(self, volume: Volume) -> Path:
        return self.mounts / self.key(volume)

    def served(self, volume: Volume) -> Path:
        """The directory containers get: the filesystem's root, or its encrypted directory."""
        mp = self.mountpoint(volume)
        return encryption.served(mp) if encrypted(volume) else mp


def fs_of(volume: Volume) -> Filesystem:
    return FILESYSTEMS[str(volume.options.get("fs") or "ext4")]


def encrypted(volume: Volume) -> bool:
    return bool(volume.options.get("encrypt"))


def round_up(size: int) -> int:
    return -(-size // SIZE_ALIGN) * SIZE_ALIGN


def nominal_size(volume: Volume) -> int:
    """The volume's size: what ``df`` shows inside a container (see sizing.py)."""
    return round_up(int(volume.options.get("size") or DEFAULT_SIZE))


def passphrase(volume: Volume) -> tuple[str, str]:
    """The passphrase, resolved now (never cached), and the name of its secret."""
    ref = volume.options.get("passphrase")
    if not isinstance(ref, SecretRef):
        raise DriverError(
            f"encrypted volume {volume.name!r} has no -o passphrase=secret:NAME; it cannot be "
            f"unlocked"
        )
    return volume.secret("passphrase"), ref.name


def human(size: int) -> str:
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return f"{size}B"


@contextmanager
def os_errors(what: str, hint: str) -> Iterator[None]:
    """Turn a failing OS call into a :class:`DriverError` saying what failed and what to do."""
    try:
        yield
    except OSError as exc:
        raise DriverError(f"{what} failed: {exc.strerror or exc}; {hint}") from None


def devnum(device: str) -> str:
    with os_errors(f"reading {device}", "the plugin needs the host's /dev"):
        rdev = os.stat(device).st_rdev
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def make_mountpoint(mp: Path) -> None:
    with os_errors(f"creating the mountpoint {mp}", f"check permissions under {mp.parent}"):
        mp.mkdir(mode=0o755, exist_ok=True)
        if mp.is_symlink() or not stat.S_ISDIR(mp.lstat().st_mode):
            raise OSError(0, "it is not a directory (refused)")
