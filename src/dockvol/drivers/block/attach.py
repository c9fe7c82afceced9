"""Attaching a volume (loop device + mount, unlocked if encrypted) and releasing it."""

from __future__ import annotations

import logging
import os
from contextlib import suppress
from pathlib import Path

from dockvol import DriverError, Volume

from . import encryption, grow, loop, mounttable, sizing
from .commands import run
from .layout import (
    Layout,
    devnum,
    encrypted,
    fs_of,
    make_mountpoint,
    nominal_size,
    os_errors,
    passphrase,
)
from .state import Attachment, State

log = logging.getLogger("dockvol.drivers.block")


class Attacher:
    """Makes the host match: attached and mounted while the volume is used, released after."""

    def __init__(self, layout: Layout, state: State) -> None:
        self.layout = layout
        self.state = state

    def attach_and_mount(
        self, volume: Volume, *, record: bool = True, unlock: bool = True
    ) -> Attachment:
        """Attached and mounted on our mountpoint, reusing what is already there (idempotent:
        after a crash, a repeat, or a record whose device is gone). An encrypted volume is
        unlocked with its passphrase, resolved now, unless ``unlock`` is false."""
        fs = fs_of(volume)
        image, mp = self.layout.image(volume), self.layout.mountpoint(volume)
        if not image.is_file():
            raise DriverError(
                f"the image of volume {volume.name!r} is missing ({image}): its data is gone; "
                f"remove the volume (docker volume rm) and create it again"
            )
        loops = loop.backing(image)
        if len(loops) > 1:
            raise DriverError(
                f"the image of volume {volume.name!r} is attached to several loop devices "
                f"({', '.join(lp.device for lp in loops)}); detach the unused ones (losetup -d) "
                f"and retry"
            )
        fresh = not loops
        if fresh:
            self._prepare_detached(volume, image)
        device = loop.attach(image) if fresh else loops[0].device
        mounted_here = False
        try:
            dev = devnum(device)
            make_mountpoint(mp)
            entry = mounttable.mounted_at(mp)
            if entry is None:
                opts = fs.mount_options(volume.options.get("mountopts") or ())
                run(
                    [
                        "mount",
                        "-t",
                        fs.name,
                        *(["-o", opts] if opts else []),
                        "--",
                        device,
                        str(mp),
                    ],
                    what=f"mounting volume {volume.name!r} ({device}) on {mp}",
                    hint=f"check the kernel log (dmesg); the filesystem may need a repair "
                    f"({'xfs_repair' if fs.name == 'xfs' else 'e2fsck -f'} {image})",
                )
                mounted_here = True
            elif entry.devnum != dev:
                raise DriverError(
                    f"{mp} already has another filesystem mounted ({entry.source}); unmount it "
                    f"(umount {mp}) and try again"
                )
            if unlock and encrypted(volume):
                phrase, secret_name = passphrase(volume)
                encryption.unlock(mp, phrase, volume.name, secret_name)
        except BaseException:
            # Undo only what this call did: an existing mount may have users.
            if mounted_here:
                with suppress(DriverError):
                    run(["umount", "--", str(mp)], what=f"unmounting {mp}", hint="")
            if fresh:
                self.detach_quietly(volume, device)
            raise
        att = Attachment(device, dev, mp)
        if record:
            self.state.record(volume.key, att)
        return att

    def _prepare_detached(self, volume: Volume, image: Path) -> None:
        """Before a fresh attach of an ext4 image: check it if it was not cleanly unmounted (a
        crash, or a fence on another node: the journal is replayed and anything unsafe is
        refused), and finish a grow that could not be done while it was mounted. Both read
        only the superblock in the normal case: Mount stays fast."""
        if fs_of(volume).name != "ext4":
            return  # xfs replays its log at mount; xfs_repair refuses a filesystem with a dirty log
        if sizing.ext4_unclean(image):
            log.warning("volume %r was not cleanly unmounted: checking it (e2fsck -p)", volume.name)
            run(
                ["e2fsck", "-p", "--", str(image)],
                what=f"checking the filesystem of volume {volume.name!r} (it was not cleanly "
                f"unmounted)",
                hint=f"it needs a manual repair: run e2fsck -f {image} on this host, then mount "
                f"it again",
                ok=(0, 1, 2),
            )
        if grow.pending_ext4_grow(image):
            grow.ext4_offline(volume, image, nominal_size(volume), self.scratch(volume))

    def scratch(self, volume: Volume) -> Path:
        """A directory to mount a detached image on for a moment (measuring it)."""
        return self.layout.mounts / f".measure-{self.layout.key(volume)}"

    def release(self, volume: Volume, mp: Path, device: str | None, dev: str | None) -> None:
        """Unmount our mountpoint and detach the device (if nothing else holds it)."""
        entry = mounttable.mounted_at(mp)
        if entry is not None and (dev is None or entry.devnum == dev):
            if encrypted(volume):
                # Before unmounting: a copy of the mount in another namespace keeps the
                # filesystem (and its keyring) alive; without the key it holds only ciphertext.
                encryption.lock(mp, volume.name)
            run(
                ["umount", "--", str(mp)],
                what=f"unmounting volume {volume.name!r} from {mp}",
                hint=f"a process on the host still uses it: find it with fuser -vm {mp}, stop "
                f"it, and try again",
            )
        if device is None:
            return
        if loop.held(device):
            # Mounted in another namespace (a leaked mount): detaching only marks it to be freed
            # by the kernel once that mount goes, so nothing is torn down under its user.
            log.warning(
                "volume %r: %s is still mounted elsewhere; it will be freed when released",
                volume.name,
                device,
            )
        # False: already gone (auto-cleared, or detached by someone else): nothing to release.
        loop.detach(device, self.layout.image(volume))

    def refuse_if_attached(self, volume: Volume) -> None:
        """Before deleting a volume: it must be detached everywhere on this host, and nothing
        mounted on its mountpoint (never delete through a live mount)."""
        image, mp = self.layout.image(volume), self.layout.mountpoint(volume)
        loops = loop.backing(image)
        att = self.state.attachment(self.layout.key(volume))
        if att is None and loops and mounttable.mounted_at(mp) is None:
            # Not ours to use any more, but a copy of its mount lives in another namespace.
            pids = sorted({p for lp in loops for p in mounttable.other_namespaces_using(lp.devnum)})
            raise DriverError(
                f"volume {volume.name!r} is unmounted, but its loop device "
                f"{', '.join(lp.device for lp in loops)} is still held by processes {pids} "
                f"(another mount namespace, made while it was mounted, kept a copy); the kernel "
                f"frees it when they exit: try again then"
            )
        devices = [lp.device for lp in loops]
        if att is not None and not devices:
            devices = [att.device]
        if devices:
            raise DriverError(
                f"volume {volume.name!r} is still attached ({', '.join(devices)}): stop the "
                f"containers using it (docker ps -a --filter volume={volume.name}) and try again"
            )
        entry = mounttable.mounted_at(mp)
        if entry is not None:
            raise DriverError(
                f"volume {volume.name!r}: {mp} is still mounted ({entry.source}); refusing to "
                f"delete through a live mount: unmount it (umount {mp}) and try again"
            )

    def detach_quietly(self, volume: Volume, device: str) -> None:
        try:
            loop.detach(device, self.layout.image(volume))
        except DriverError as exc:
            log.warning("%s", exc)

    def mounted_here(self, lp: loop.Loop) -> bool:
        """``lp`` is mounted on our mountpoint of its image, in our mount namespace."""
        key = Path(lp.backing).name.removesuffix(".new").removesuffix(".img")
        entry = mounttable.mounted_at(self.layout.mounts / key)
        return entry is not None and entry.devnum == lp.devnum

    def attached_here(self, volume: Volume) -> bool:
        return any(self.mounted_here(lp) for lp in loop.backing(self.layout.image(volume)))


def apply_ownership(volume: Volume, served: Path) -> None:
    uid, gid, mode = (volume.options.get(k) for k in ("uid", "gid", "mode"))
    hint = "check the uid/gid/mode options"
    with os_errors(f"setting the owner and mode of {served}", hint):
        if uid is not None or gid is not None:
            os.chown(served, -1 if uid is None else int(uid), -1 if gid is None else int(gid))
        if mode is not None:
            os.chmod(served, int(mode))
    # An empty lost+found makes a new volume look non-empty: the engine would then skip copying
    # the image's content in, and some programs (initdb) refuse such a directory. fsck
    # recreates it when it needs it. (An encrypted volume serves a subdirectory: no lost+found.)
    if not encrypted(volume):
        with suppress(OSError):
            (served / "lost+found").rmdir()
