"""Loop devices: attach an image file, find which devices back it, detach.

Lookups read ``/sys/block/loop*`` (no subprocess: cheap enough for any call). Attaching goes
through ``losetup`` (an argument list); detaching is one ioctl on a checked, open device.
"""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dockvol import DriverError

from .commands import run

SYS_BLOCK: Final = Path("/sys/block")
LOOP_CLR_FD: Final = 0x4C01  # linux/loop.h
_DELETED: Final = " (deleted)"


@dataclass(frozen=True, slots=True)
class Loop:
    """One attached loop device."""

    device: str  # /dev/loopN
    devnum: str  # "7:N", as in /proc/self/mountinfo
    backing: str  # the backing file's path (as the kernel reports it)
    deleted: bool  # the backing file was unlinked while attached


def attached(sys_block: Path = SYS_BLOCK) -> list[Loop]:
    """Every loop device that has a backing file now."""
    found: list[Loop] = []
    try:
        names = sorted(os.listdir(sys_block))
    except OSError:
        return found
    for name in names:
        if not name.startswith("loop"):
            continue
        base = sys_block / name
        try:
            raw = (base / "loop" / "backing_file").read_text().rstrip("\n")
            devnum = (base / "dev").read_text().strip()
        except OSError:
            continue  # not attached (no loop/ directory), or detached meanwhile
        deleted = raw.endswith(_DELETED)
        backing = raw[: -len(_DELETED)] if deleted else raw
        found.append(Loop(f"/dev/{name}", devnum, backing, deleted))
    return found


def _backing_file(base: Path) -> str | None:
    try:
        raw = (base / "loop" / "backing_file").read_text().rstrip("\n")
    except OSError:
        return None
    return raw.removesuffix(_DELETED)


def backing(image: Path, sys_block: Path = SYS_BLOCK) -> list[Loop]:
    """The loop devices attached to ``image`` (normally zero or one)."""
    want = os.path.realpath(image)
    return [lp for lp in attached(sys_block) if not lp.deleted and lp.backing == want]


def under(directory: Path, sys_block: Path = SYS_BLOCK) -> list[Loop]:
    """The loop devices whose backing file is (or was) in ``directory``."""
    prefix = os.path.realpath(directory) + os.sep
    return [lp for lp in attached(sys_block) if lp.backing.startswith(prefix)]


def attach(image: Path) -> str:
    """Attach ``image`` to a free loop device; return the device path."""
    out = run(
        ["losetup", "--find", "--show", "--", str(image)],
        what=f"attaching {image} to a loop device",
        hint="check that loop devices are available (modprobe loop; the plugin needs /dev and "
        "CAP_SYS_ADMIN) and that fewer than max_loop are in use (losetup -a)",
    )
    device = out.strip()
    if not device.startswith("/dev/loop"):
        raise DriverError(
            f"attaching {image} failed: losetup printed {device!r}, not a loop device"
        )
    return device


def detach(device: str, image: str | Path, sys_block: Path = SYS_BLOCK) -> bool:
    """Detach ``device`` if it still backs ``image``; whether it did.

    Checked and done through one open file of the device: while we hold it open, the kernel
    cannot free the device and hand it to someone else, so we never detach another program's
    device (``losetup -d`` by name could, if ours was auto-cleared meanwhile). If others still
    have it open (a filesystem mounted in another namespace), the kernel frees it when they let
    go: nothing is torn down under them.
    """
    want = os.path.realpath(image)
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENXIO):
            return False
        raise DriverError(
            f"detaching loop device {device} failed: cannot open it: {exc.strerror}; the plugin "
            f"needs the host's /dev and CAP_SYS_ADMIN"
        ) from None
    try:
        if _backing_file(sys_block / os.path.basename(device)) != want:
            return False  # already freed, or no longer ours
        try:
            fcntl.ioctl(fd, LOOP_CLR_FD, 0)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return False  # freed meanwhile
            raise DriverError(
                f"detaching loop device {device} failed: {exc.strerror}; see what still holds "
                f"it (losetup -a; findmnt {device}) and try again"
            ) from None
    finally:
        os.close(fd)
    return True


def refresh_capacity(device: str) -> None:
    """Make the device see the new size of its (grown) backing file."""
    run(
        ["losetup", "--set-capacity", device],
        what=f"updating the size of loop device {device}",
        hint="the image was grown; unmount the volume and resize again",
    )


def held(device: str) -> bool:
    """Whether a filesystem (in any mount namespace) or another exclusive user holds ``device``.

    An exclusive open fails with EBUSY exactly when the block device is claimed, which is what a
    mount does: this proves a loop device unused without scanning every namespace.
    """
    try:
        fd = os.open(device, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return True
        if exc.errno in (errno.ENOENT, errno.ENXIO):
            return False
        raise DriverError(
            f"checking whether {device} is in use failed: {exc.strerror}; the plugin needs /dev "
            f"and CAP_SYS_ADMIN"
        ) from None
    os.close(fd)
    return False
