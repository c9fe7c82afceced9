"""How large an image must be for containers to get the volume's size.

A filesystem keeps part of its device for itself: ext4 its journal, inode tables, bitmaps and
group descriptors; xfs its log. ``df`` (statfs ``f_blocks``) shows the rest. A volume's size is
what ``df`` shows, so the image is larger than the size by exactly that overhead. The overhead is
measured, never guessed: make the filesystem, read its real size from its superblock (or from
statfs while mounted), and grow the image by what is missing, until the size is reached. Each
step estimates the overhead of the missing part from the measured one (the journal or log is
fixed; the rest grows with the filesystem), so two or three steps suffice.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dockvol import DriverError

#: Images are whole multiples of this (a filesystem block): finer than 1 MiB, so that a small
#: volume is not more than 1% larger than asked.
ALIGN: Final = 4096
#: At most this many filesystems or grows per create or resize (it converges in two or three).
MAX_STEPS: Final = 8

_EXT4_MAGIC: Final = 0xEF53
_EXT4_INCOMPAT_64BIT: Final = 0x80
_EXT4_INCOMPAT_RECOVER: Final = 0x4  # the journal must be replayed: not cleanly unmounted
_EXT4_STATE_VALID: Final = 0x1
_EXT4_STATE_ERROR: Final = 0x2
_EXT4_JNL_BACKUP_BLOCKS: Final = 1


@dataclass(frozen=True, slots=True)
class Geometry:
    """A filesystem's sizes in bytes: ``usable`` is what statfs reports as its size (what
    ``df`` shows), ``device`` the device size it spans, ``fixed`` the part of its overhead that
    does not grow with it (ext4's journal, xfs's log)."""

    usable: int
    device: int
    fixed: int


def align(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def geometry(image: Path) -> Geometry | None:
    """The geometry recorded in the superblock of the filesystem in ``image`` (``None``: not
    readable, or an ext4 whose overhead the kernel has still to compute: see
    :func:`ext4_geometry`)."""
    try:
        with open(image, "rb") as f:
            head = f.read(2048)
    except OSError:
        return None
    if head[:4] == b"XFSB":
        return _xfs(head)
    return _ext4(head[1024:])


def _xfs(sb: bytes) -> Geometry | None:
    # struct xfs_dsb (big-endian): sb_blocksize @4, sb_dblocks @8, sb_logstart @48 (0: an
    # external log), sb_logblocks @96. statfs: f_blocks = dblocks minus an internal log.
    if len(sb) < 100:
        return None
    (blocksize,) = struct.unpack_from(">I", sb, 4)
    (dblocks,) = struct.unpack_from(">Q", sb, 8)
    (logstart,) = struct.unpack_from(">Q", sb, 48)
    (logblocks,) = struct.unpack_from(">I", sb, 96)
    log = logblocks if logstart else 0
    return Geometry((dblocks - log) * blocksize, dblocks * blocksize, log * blocksize)


def _ext4_fields(sb: bytes) -> tuple[int, int, int, int] | None:
    """(block size, blocks, overhead blocks (0: not recorded), journal bytes)."""
    if len(sb) < 0x24C or int.from_bytes(sb[0x38:0x3A], "little") != _EXT4_MAGIC:
        return None
    blocksize = 1024 << int.from_bytes(sb[0x18:0x1C], "little")
    blocks = int.from_bytes(sb[0x4:0x8], "little")
    if int.from_bytes(sb[0x60:0x64], "little") & _EXT4_INCOMPAT_64BIT:
        blocks |= int.from_bytes(sb[0x150:0x154], "little") << 32
    overhead = int.from_bytes(sb[0x248:0x24C], "little")  # s_overhead_clusters (no bigalloc)
    journal = 0
    if sb[0xFD] == _EXT4_JNL_BACKUP_BLOCKS:  # s_jnl_blocks[15..16]: the journal's i_size
        high, low = struct.unpack_from("<II", sb, 0x10C + 15 * 4)
        journal = high << 32 | low
    return blocksize, blocks, overhead, journal


def _ext4(sb: bytes) -> Geometry | None:
    fields = _ext4_fields(sb)
    if fields is None:
        return None
    blocksize, blocks, overhead, journal = fields
    if not overhead:
        # resize2fs clears it; the kernel computes it at the next mount (ext4_geometry).
        return None
    return Geometry((blocks - overhead) * blocksize, blocks * blocksize, journal)


def fixed_bytes(image: Path) -> int:
    """The overhead that does not grow with the filesystem: ext4's journal, xfs's log."""
    try:
        with open(image, "rb") as f:
            head = f.read(2048)
    except OSError:
        return 0
    if head[:4] == b"XFSB":
        geo = _xfs(head)
        return geo.fixed if geo is not None else 0
    fields = _ext4_fields(head[1024:])
    return fields[3] if fields is not None else 0


def ext4_free_geometry(image: Path) -> Geometry | None:
    """For a filesystem just made (nothing written yet) whose superblock records no overhead
    (an older mke2fs): its free blocks, a lower bound of its size by a few blocks."""
    try:
        with open(image, "rb") as f:
            f.seek(1024)
            sb = f.read(1024)
    except OSError:
        return None
    fields = _ext4_fields(sb)
    if fields is None:
        return None
    blocksize, blocks, _, journal = fields
    free = int.from_bytes(sb[0xC:0x10], "little")
    free |= int.from_bytes(sb[0x158:0x15C], "little") << 32
    return Geometry(free * blocksize, blocks * blocksize, journal)


def ext4_unclean(image: Path) -> bool:
    """Whether the ext4 filesystem in ``image`` was not cleanly unmounted (its journal needs a
    replay: a crash, or a fence) or has recorded errors: then it is checked before mounting."""
    try:
        with open(image, "rb") as f:
            f.seek(1024)
            sb = f.read(0x64)
    except OSError:
        return False
    if len(sb) < 0x64 or int.from_bytes(sb[0x38:0x3A], "little") != _EXT4_MAGIC:
        return False
    state = int.from_bytes(sb[0x3A:0x3C], "little")
    incompat = int.from_bytes(sb[0x60:0x64], "little")
    return bool(
        incompat & _EXT4_INCOMPAT_RECOVER
        or state & _EXT4_STATE_ERROR
        or not state & _EXT4_STATE_VALID
    )


def statfs_usable(mountpoint: Path) -> int:
    """The size ``df`` shows for the filesystem mounted on ``mountpoint``."""
    vfs = os.statvfs(mountpoint)
    return vfs.f_blocks * vfs.f_frsize


def next_image_size(image_size: int, measured: Geometry, target: int) -> int:
    """The image size that should give ``target`` usable bytes, from one measurement: the
    missing bytes plus their share of the overhead that grows with the filesystem."""
    growing = image_size - measured.usable - measured.fixed
    ratio = min(max(growing / image_size, 0.0), 0.5) if image_size else 0.0
    missing = target - measured.usable
    return align(max(image_size + int(missing / (1.0 - ratio)) + 1, ALIGN))


def grow_start(image_size: int, measured: Geometry, target: int) -> int:
    """Where growing starts: the missing bytes alone (an image is never shrunk, so the first
    step stays below the target and the next ones measure the overhead of the growth)."""
    return align(image_size + max(target - measured.usable, 0))


def within(usable: int, target: int) -> bool:
    """The promise: at least the size, and at most 1% more."""
    return target <= usable <= target + target // 100


def fit(
    target: int,
    start: int,
    make: Callable[[int], Geometry],
    what: str,
    *,
    grow_only: bool = False,
) -> Geometry:
    """Find an image size whose filesystem gives ``target`` usable bytes: ``make(size)`` makes
    (or grows) the filesystem on an image of ``size`` bytes and returns what it measured.
    Starts at ``start`` and moves by measured differences. Creating, it stops at the first size
    within 1% above ``target`` (or the first that reaches it); growing (``grow_only``: an image
    is never shrunk), at the first that reaches it."""
    size = align(start)
    reached: int | None = None
    previous: tuple[int, int] | None = None
    for _ in range(MAX_STEPS):
        got = make(size)
        if within(got.usable, target) or (grow_only and got.usable >= target):
            return got
        if got.usable >= target and reached is None:
            reached = size
        if grow_only and previous is not None and size > previous[0]:
            # The overhead of what the last step added: measured, not assumed.
            gained = (got.usable - previous[1]) / (size - previous[0])
            ratio = min(max(1.0 - gained, 0.0), 0.5)
            previous = (size, got.usable)
            size = align(size + int((target - got.usable) / (1.0 - ratio)) + 1)
        else:
            previous = (size, got.usable)
            size = next_image_size(size, got, target)
        if grow_only:
            size = max(size, got.device + ALIGN)
    if reached is not None:
        return make(reached)  # more than 1% above: the best that could be done
    raise DriverError(
        f"{what} failed: the filesystem stayed smaller than {target} bytes after {MAX_STEPS} "
        f"attempts; this is a bug: report it with the volume's options"
    )
