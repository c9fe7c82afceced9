"""Start-up and audit: adopt what a crash left attached, release what nothing uses, report
what cannot be explained. The driver keeps no state of its own about devices: it reads the
kernel's tables (/sys/block/loop*, /proc/self/mountinfo) and the framework's records."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Final

from dockvol import DriverError, Volume

from . import encryption, images, loop, mounttable
from .attach import Attacher
from .commands import run
from .layout import devnum
from .state import Attachment

log = logging.getLogger("dockvol.drivers.block")

#: On a shared root, files of another node's create in progress may be this young: leave them.
NEW_FILE_GRACE: Final = 600.0


class Recovery:
    def __init__(self, attacher: Attacher) -> None:
        self.attacher = attacher
        self.layout = attacher.layout
        self.state = attacher.state

    def sweep_loops(self) -> None:
        """Detach our loop devices that nothing holds (provably unused: no filesystem on them
        is mounted in any namespace); remember the mounted ones for :meth:`recover` to claim."""
        for lp in loop.under(self.layout.images):
            held = loop.held(lp.device)
            if held and self.layout.clustered and not self.attacher.mounted_here(lp):
                # Shared root: a device we did not mount may be another node's (when nodes
                # share a kernel) or a copy a container keeps; the next Mount here reuses it.
                continue
            if lp.backing.endswith(".img.new"):
                if not (self.layout.clustered and not held):  # unmounted: maybe a create
                    self._drop_interrupted_create(lp)
                continue
            key = Path(lp.backing).name.removesuffix(".img")
            if held:
                if lp.deleted:
                    log.warning(
                        "loop device %s is still in use but its image %s was deleted; leaving it",
                        lp.device,
                        lp.backing,
                    )
                else:
                    self.state.unclaimed[key] = lp.device
                continue
            log.warning(
                "detaching unused loop device %s of %s (left by a crash)", lp.device, lp.backing
            )
            try:
                loop.detach(lp.device, lp.backing)
            except DriverError as exc:
                log.warning("%s", exc)

    def _drop_interrupted_create(self, lp: loop.Loop) -> None:
        """A crash while create had a new encrypted filesystem mounted (to make its encrypted
        directory): nobody ever used it; unmount it from our mountpoint and detach it. The image
        itself is deleted by :meth:`audit`, or replaced when the volume is created again."""
        mp = self.layout.mounts / Path(lp.backing).name.removesuffix(".img.new")
        log.warning("releasing %s of %s, left by an interrupted create", lp.device, lp.backing)
        try:
            entry = mounttable.mounted_at(mp)
            if entry is not None and entry.devnum == lp.devnum:
                run(["umount", "--", str(mp)], what=f"unmounting {mp}", hint="")
            loop.detach(lp.device, lp.backing)
        except DriverError as exc:
            log.warning("%s", exc)

    def recover(
        self, volume: Volume, mountpoint: Path | None, hold: Callable[[str], None] | None
    ) -> Path | None:
        layout, state, attacher = self.layout, self.state, self.attacher
        key = layout.key(volume)
        state.unclaimed.pop(key, None)
        mp, served = layout.mountpoint(volume), layout.served(volume)
        if mountpoint is not None:
            if Path(mountpoint) != served:
                log.warning(
                    "volume %r was mounted on %s; it is now served from %s",
                    volume.name,
                    mountpoint,
                    served,
                )
            # Records say containers use it: attach and mount again what a crash or reboot
            # lost, and (encrypted) add the key again from the secret.
            if hold is not None and not attacher.attached_here(volume):
                # Re-attaching after a reboot: another node may have taken the volume once our
                # lease expired. Mounting it here too would corrupt it: only with the hold.
                hold(volume.name)
            try:
                attacher.attach_and_mount(volume)
            except DriverError:
                # Not unlocked (secret missing or wrong): what is still mounted stays mounted
                # for its containers, and known, so that status and the last Unmount see it.
                for lp in loop.backing(layout.image(volume)):
                    entry = mounttable.mounted_at(mp)
                    if entry is not None and entry.devnum == lp.devnum:
                        state.record(key, Attachment(lp.device, lp.devnum, mp))
                raise
            return served
        if not layout.image(volume).exists():
            if layout.clustered:
                # Another node may be creating it right now (the record comes first): never
                # write an image of the shared root we did not claim. Mount reports it.
                log.warning("volume %r has no image yet (created on another node?)", volume.name)
                return None
            # A crash between the record and the image (Create records first): nothing can
            # have been written to it yet, so make it now.
            log.warning("volume %r has no image: creating it", volume.name)
            images.create(layout, volume)
            return None
        # Records say nobody uses it: release it, unless another namespace (a container) still
        # mounts it, in which case it stays attached and the next Mount reuses it.
        for lp in loop.backing(layout.image(volume)):
            users = mounttable.other_namespaces_using(lp.devnum)
            if users and layout.clustered and not attacher.mounted_here(lp):
                continue  # not ours to track: another node's (shared kernel) or a leaked copy
            if users:
                log.warning(
                    "volume %r: no record uses it, but %s is mounted by processes %s; leaving "
                    "it attached (the next mount reuses it)",
                    volume.name,
                    lp.device,
                    users,
                )
                state.record(key, Attachment(lp.device, lp.devnum, mp))
                return None
            attacher.release(volume, mp, lp.device, lp.devnum)
        return None

    def unclaimed(self) -> dict[str, str]:
        """Settle our loop devices that were mounted at start but that no record claimed.

        A device is released only when provably unused: no other mount namespace (no
        container) mounts it and a plain umount succeeds (no process has files open in it).
        The rest is reported and left alone. Returns what is left (volume key -> device)."""
        self.state.settled = True
        for key, device in list(self.state.unclaimed.items()):
            mp = self.layout.mounts / key
            users: list[int] = []
            try:
                dev = devnum(device)
                users = mounttable.other_namespaces_using(dev)
                if not users:
                    entry = mounttable.mounted_at(mp)
                    if entry is not None and entry.devnum == dev:
                        if (mp / encryption.HEADER_NAME).exists():
                            encryption.lock(mp, key)
                        run(["umount", "--", str(mp)], what=f"unmounting {mp}", hint="")
                    if not loop.held(device):
                        loop.detach(device, self.layout.images / f"{key}.img")
                        log.warning("released %s of volume key %r: no record used it", device, key)
                        del self.state.unclaimed[key]
                        continue
            except DriverError as exc:
                log.debug("%s", exc)
            log.warning(
                "loop device %s holds the image of volume key %r, which no record explains, "
                "and is still in use%s: it is left alone; stop its users (findmnt %s; fuser -vm "
                "%s) and restart the plugin",
                device,
                key,
                f" by processes {users}" if users else "",
                device,
                mp,
            )
        return dict(self.state.unclaimed)

    def settle_once(self) -> None:
        state = self.state
        if not state.settled:
            with state.lock:
                if state.settled:
                    return
                state.settled = True
            self.unclaimed()

    def audit(self, volumes: Sequence[Volume]) -> list[str]:
        """After :meth:`recover`: report (and, when provably unused, release) storage of ours
        that no volume explains."""
        with self.state.lock:
            self.state.settled = True
        problems = [
            f"loop device {device} holds the image of volume key {key!r}, which no record "
            f"explains, and is still in use: stop its users (findmnt {device}) and restart the "
            f"plugin"
            for key, device in self.unclaimed().items()
        ]
        known = {v.key for v in volumes}
        image_dir = self.layout.images
        try:
            names = sorted(os.listdir(image_dir))
        except OSError as exc:
            return [*problems, f"cannot list {image_dir}: {exc.strerror}"]
        attached = {lp.backing for lp in loop.under(image_dir)}
        for name in names:
            path = image_dir / name
            if self.layout.clustered and _young(path):
                continue  # on a shared root: maybe another node's create in progress
            if name.endswith(".img.new") and os.path.realpath(path) not in attached:
                # A create interrupted before its filesystem was complete: never held data.
                with suppress(OSError):
                    path.unlink()
                    log.warning("deleted %s, left by an interrupted create", path)
            elif name.endswith(".img") and name.removesuffix(".img") not in known:
                problems.append(
                    f"image {path} belongs to no volume (its record was lost?): create the "
                    f"volume again with the same size and fs to reuse its data, or delete the file"
                )
        return problems


def _young(path: Path) -> bool:
    try:
        return time.time() - path.stat().st_mtime < NEW_FILE_GRACE
    except OSError:
        return True  # gone meanwhile: nothing to do
