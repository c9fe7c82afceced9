"""A volume's image file: made (sized so that containers get the volume's size), adopted when
an earlier plugin left one, deleted."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dockvol import DriverError, Volume
from dockvol.host import fsync_dir

from . import encryption, grow, loop, mounttable, sizing
from .commands import run
from .filesystems import Filesystem, ext4_encrypted, probe
from .layout import (
    Layout,
    encrypted,
    fs_of,
    human,
    make_mountpoint,
    nominal_size,
    os_errors,
    passphrase,
)

log = logging.getLogger("dockvol.drivers.block")


def check_encryption_options(volume: Volume, fs: Filesystem) -> None:
    has_passphrase = volume.options.get("passphrase") is not None
    if not encrypted(volume):
        if has_passphrase:
            raise DriverError(
                "-o passphrase= is only used with -o encrypt=true: add it, or drop the passphrase"
            )
        return
    if fs.name != "ext4":
        raise DriverError(
            f"-o encrypt=true needs -o fs=ext4: {fs.name} has no native encryption; drop "
            f"-o fs={fs.name}"
        )
    if not has_passphrase:
        raise DriverError(
            "-o encrypt=true needs -o passphrase=secret:NAME, naming a secret in the plugin's "
            "--secrets-dir (file NAME) or environment (DOCKVOL_SECRET_<NAME>)"
        )


#: (mkfs arguments, size) -> the image size that gave exactly that size (see create).
_FITTED: dict[tuple[tuple[str, ...], int], int] = {}


def create(layout: Layout, volume: Volume) -> None:
    """Make the volume's image, or adopt the one an earlier plugin left (never overwritten)."""
    fs = fs_of(volume)
    size = nominal_size(volume)
    if size < fs.min_size:
        other = " (or use -o fs=ext4, which needs at least 8M)" if fs.name == "xfs" else ""
        raise DriverError(
            f"size {human(size)} is too small for {fs.name}: use at least "
            f"{human(fs.min_size)}{other}"
        )
    # Refuse options that do not apply to this filesystem now, not at the first mount.
    fs.mount_options(volume.options.get("mountopts") or ())
    check_encryption_options(volume, fs)
    image = layout.image(volume)
    tmp = image.with_name(image.name + ".new")
    features = ("encrypt",) if encrypted(volume) else ()
    args = fs.mkfs_args(tmp, volume.options.get("mkfsopts") or (), features)
    if image.exists():
        adopt(layout, volume, image, fs, size)
        return
    # Resolved before anything is written: a missing secret fails the create cleanly.
    phrase = passphrase(volume)[0] if encrypted(volume) else ""
    hint = f"check free space and permissions under {layout.images}"
    what = f"creating the {fs.name} filesystem of volume {volume.name!r}"

    def make(image_size: int) -> sizing.Geometry:
        with os_errors(f"creating the image file {tmp}", hint):
            tmp.unlink(missing_ok=True)
            with open(tmp, "xb") as f:
                f.truncate(image_size)  # sparse: only what is written takes space
        run(args, what=what, hint=hint)
        geo = sizing.geometry(tmp) or sizing.ext4_free_geometry(tmp)
        if geo is None:
            raise DriverError(f"{what} failed: mkfs left no filesystem it can read; {hint}")
        return geo

    # The same filesystem, size and mkfs options give the same overhead: start from the image
    # size that fitted last time, so that one mkfs is usually enough (each run costs ~100 ms).
    recipe = (tuple(args[:-1]) if args and args[-1] == str(tmp) else tuple(args), size)
    try:
        made = sizing.fit(size, _FITTED.get(recipe, size), make, what)
        _FITTED[recipe] = made.device
        if made.device < tmp.stat().st_size:
            # mkfs left a tail too small for a block group (or an AG): the image ends where
            # its filesystem does, so that no grow looks pending.
            os.truncate(tmp, made.device)
        if encrypted(volume):
            _setup_encryption(layout, volume, tmp, phrase)
        with os_errors(f"saving the image file {image}", hint):
            os.rename(tmp, image)
            fsync_dir(layout.images)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _setup_encryption(layout: Layout, volume: Volume, image: Path, phrase: str) -> None:
    """Mount the new filesystem once to make its encrypted directory (see encryption.py)."""
    mp = layout.mountpoint(volume)
    entry = mounttable.mounted_at(mp)
    if entry is not None:
        raise DriverError(
            f"creating volume {volume.name!r}: {mp} already has a filesystem mounted "
            f"({entry.source}); unmount it (umount {mp}) and try again"
        )
    device = loop.attach(image)
    try:
        make_mountpoint(mp)
        run(
            ["mount", "-t", "ext4", "--", device, str(mp)],
            what=f"mounting the new filesystem of volume {volume.name!r} ({device}) on {mp}",
            hint="check the kernel log (dmesg)",
        )
        try:
            encryption.setup(mp, phrase)
        finally:
            run(
                ["umount", "--", str(mp)],
                what=f"unmounting the new filesystem of volume {volume.name!r} from {mp}",
                hint=f"unmount it (umount {mp}) and create the volume again",
            )
    finally:
        try:
            loop.detach(device, image)
        except DriverError as exc:
            log.warning("%s", exc)


def adopt(layout: Layout, volume: Volume, image: Path, fs: Filesystem, size: int) -> None:
    """An image for this key survives from an earlier plugin (state lost, or a crash between
    mkfs and the record): keep its data if it matches, refuse otherwise. Never overwrite."""
    found = probe(image)
    with os_errors(f"reading {image}", f"check permissions under {layout.images}"):
        current = image.stat().st_size
    if found == "ext4" and ext4_encrypted(image) != encrypted(volume):
        # Reusing it would serve ciphertext names, or claim encryption that is not there.
        was = "encrypted" if ext4_encrypted(image) else "not encrypted"
        raise DriverError(
            f"an image for volume {volume.name!r} already exists at {image} and is {was}, "
            f"left by an earlier plugin: move or delete it, or create the volume "
            f"{'with' if was == 'encrypted' else 'without'} -o encrypt=true to keep its data"
        )
    usable = None
    if found == fs.name and not loop.backing(image):
        geo = grow.measure_detached(image, fs.name, layout.mounts / f".measure-{volume.key}")
        usable = geo.usable
    # Made by this version (the size is what df shows), or by an earlier one (the image was
    # the size: resize it to the same size to get the whole size).
    if found == fs.name and (
        current == size or (usable is not None and sizing.within(usable, size))
    ):
        log.warning("volume %r: reusing the existing image %s", volume.name, image)
        return
    shown = human(usable - usable % (1 << 20) if usable is not None else current)
    raise DriverError(
        f"an image for volume {volume.name!r} already exists at {image} ({found or 'unknown'} "
        f"filesystem, {shown}), left by an earlier plugin: move or delete it, or create "
        f"the volume with -o fs={found or 'ext4'} -o size={shown} to keep its data"
    )


def remove(layout: Layout, volume: Volume, image: Path) -> None:
    """Delete the (detached) image, then the empty mountpoint (rmdir: never a recursive delete)."""
    hint = f"check permissions under {layout.root}"
    with os_errors(f"deleting the image {image}", hint):
        image.unlink(missing_ok=True)
        image.with_name(image.name + ".new").unlink(missing_ok=True)
        fsync_dir(layout.images)
    mp = layout.mountpoint(volume)
    try:
        mp.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("volume %r removed, but %s was left: %s", volume.name, mp, exc.strerror)
