"""Growing a volume's filesystem until it gives the volume's size (see sizing.py), mounted
(``resize2fs`` or ``xfs_growfs`` online) or, for ext4, on the detached image."""

from __future__ import annotations

import logging
import os
from contextlib import suppress
from pathlib import Path
from typing import Final

from dockvol import DriverError, Volume

from . import loop, sizing
from .commands import run
from .filesystems import Filesystem, ext4_bytes
from .layout import make_mountpoint, os_errors
from .state import Attachment

log = logging.getLogger("dockvol.drivers.block")

_NO_REPLAY: Final = {"ext4": "noload", "xfs": "norecovery"}
#: An image this much larger than its ext4 filesystem has a grow to finish at attach.
PENDING_MIN: Final = 1 << 20


def _image_size(image: Path) -> int:
    with os_errors(f"reading the image {image}", "the volume's image is missing: recreate it"):
        return image.stat().st_size


def _extend(image: Path, size: int) -> None:
    if size > _image_size(image):
        with os_errors(f"growing the image {image}", f"check free space under {image.parent}"):
            os.truncate(image, size)


def online(volume: Volume, fs: Filesystem, att: Attachment, image: Path, target: int) -> None:
    """Grow the mounted filesystem (and its image) until ``df`` shows at least ``target``."""
    fixed = sizing.fixed_bytes(image)
    now = _image_size(image)
    measured = sizing.Geometry(sizing.statfs_usable(att.mountpoint), now, fixed)

    def make(size: int) -> sizing.Geometry:
        if size > _image_size(image):
            _extend(image, size)
            loop.refresh_capacity(att.device)
        try:
            _grow_mounted(volume, fs, att)
        except NeedsCapability:
            # The next attach grows the filesystem offline to fill the image: make the image
            # large enough for the whole target now (the overhead estimated from the
            # filesystem's present share, an estimate on the safe side).
            _extend(image, sizing.next_image_size(now, measured, target))
            raise
        return sizing.Geometry(sizing.statfs_usable(att.mountpoint), size, fixed)

    start = sizing.grow_start(now, measured, target)
    sizing.fit(target, start, make, f"growing volume {volume.name!r}", grow_only=True)


class NeedsCapability(DriverError):
    """Growing a mounted ext4 needs CAP_SYS_RESOURCE, which the plugin lacks."""


def _grow_mounted(volume: Volume, fs: Filesystem, att: Attachment) -> None:
    try:
        run(
            fs.grow_args(att.device, att.mountpoint),
            what=f"growing the {fs.name} filesystem of volume {volume.name!r}",
            hint="the image is already larger; run the resize again, or check the plugin's log",
        )
    except DriverError as exc:
        if fs.name == "ext4" and "Permission denied" in exc.message:
            # The kernel wants CAP_SYS_RESOURCE for an online ext4 resize.
            raise NeedsCapability(
                f"volume {volume.name!r} is in use and growing a mounted ext4 filesystem needs "
                f"CAP_SYS_RESOURCE, which the plugin lacks: the image is already grown, and "
                f"the filesystem grows when the volume is next attached (after its containers "
                f"stop); or give the plugin CAP_SYS_RESOURCE and resize again"
            ) from None
        raise


def ext4_offline(volume: Volume, image: Path, target: int, scratch: Path) -> None:
    """Grow the detached ext4 image until its filesystem fills it and gives at least
    ``target``; ``scratch``: an unused directory to mount it on read-only when the kernel must
    measure it."""
    what = f"growing the ext4 filesystem of volume {volume.name!r}"
    hint = f"check it with e2fsck -f {image} and resize again"
    now = _image_size(image)
    measured = measure_detached(image, "ext4", scratch)
    start = sizing.grow_start(now, measured, target)

    def make(size: int) -> sizing.Geometry:
        _extend(image, size)
        # resize2fs insists on a freshly checked filesystem; -p fixes only what is safe (exit 1).
        run(
            ["e2fsck", "-f", "-p", "--", str(image)],
            what=f"{what} (checking it)",
            hint=hint,
            ok=(0, 1),
        )
        run(["resize2fs", "--", str(image)], what=what, hint=hint)
        fs_end = ext4_bytes(image)
        if fs_end is not None and fs_end < size:
            # resize2fs left a tail too small for a block group: the image ends where the
            # filesystem does, so that no grow looks pending at the next attach.
            with os_errors(f"trimming the image {image}", hint):
                os.truncate(image, fs_end)
        return measure_detached(image, "ext4", scratch)

    sizing.fit(target, start, make, what, grow_only=True)


def pending_ext4_grow(image: Path) -> bool:
    """An earlier resize grew the image but could not grow the mounted filesystem (no
    CAP_SYS_RESOURCE): the image is larger than the filesystem."""
    fs_end = ext4_bytes(image)
    try:
        size = image.stat().st_size
    except OSError:
        return False
    return fs_end is not None and size - fs_end >= PENDING_MIN


def measure_detached(image: Path, fs: str, scratch: Path) -> sizing.Geometry:
    """The geometry of the detached image's filesystem: from its superblock, or, when that does
    not record it (resize2fs clears ext4's overhead), from the kernel through a read-only mount."""
    geo = sizing.geometry(image)
    if geo is not None:
        return geo
    device = loop.attach(image)
    try:
        make_mountpoint(scratch)
        run(
            # Never writes: no journal replay (ext4 noload, xfs norecovery), which the size
            # does not depend on.
            ["mount", "-t", fs, "-o", f"ro,{_NO_REPLAY[fs]}", "--", device, str(scratch)],
            what=f"measuring the filesystem of {image}",
            hint="check the kernel log (dmesg)",
        )
        try:
            usable = sizing.statfs_usable(scratch)
        finally:
            run(["umount", "--", str(scratch)], what=f"unmounting {scratch}", hint="")
    finally:
        with suppress(DriverError):
            loop.detach(device, image)
        with suppress(OSError):
            scratch.rmdir()
    return sizing.Geometry(usable, _image_size(image), sizing.fixed_bytes(image))
