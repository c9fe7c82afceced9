"""The block driver: each volume is a sparse image file with its own filesystem, attached through a
loop device and mounted on first use. The framework counts references; the driver only makes the
host match: attached and mounted while anyone uses the volume, detached otherwise.

This class is the facade; each job has its module: images.py (create, adopt, delete; sizing.py
makes the size what containers get), attach.py (loop device + mount, encryption.py unlocks),
resize.py and grow.py, recovery.py (start-up and audit), fence.py (stop writes at once).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Final

from dockvol import Driver, DriverError, HostContext, Option, Volume

from . import images, loop
from .attach import Attacher, apply_ownership
from .fence import fence as fence_volume
from .filesystems import parse_mkfs_options, parse_mount_options
from .layout import DEFAULT_SIZE, Layout, encrypted, fs_of, human, nominal_size, os_errors
from .recovery import NEW_FILE_GRACE, Recovery
from .resize import resize as resize_volume
from .state import State

__all__ = ["DEFAULT_SIZE", "NEW_FILE_GRACE", "BlockDriver", "human"]

log = logging.getLogger("dockvol.drivers.block")

_REQUIRED_TOOLS: Final = ("losetup", "mount", "umount", "mkfs.ext4", "e2fsck", "resize2fs")
_XFS_TOOLS: Final = ("mkfs.xfs", "xfs_growfs")


def _parse_access(value: str) -> str:
    if value == "multi":
        raise ValueError(
            "block volumes are single-node only: a filesystem image mounted on two hosts at once "
            "is corrupted; drop -o access=multi (use the shared driver for a directory that "
            "every node mounts at once)"
        )
    if value != "single-node":
        raise ValueError(f"{value!r} is not valid; block volumes accept only access=single-node")
    return value


class BlockDriver(Driver):
    """Size-limited volumes: a sparse image per volume with its own ext4 or xfs filesystem."""

    options: ClassVar[Mapping[str, Option]] = {
        "size": Option.size(
            default=DEFAULT_SIZE, help="the volume's size (512M, 10G...); default 10G, sparse"
        ),
        "fs": Option.choice("ext4", "xfs", default="ext4", help="the filesystem: ext4 or xfs"),
        "mountopts": Option(
            parse_mount_options,
            default=(),
            help="mount options, comma-separated, from an allow-list: noatime, nodiratime, "
            "relatime, lazytime, discard, nosuid, nodev, noexec, sync, dirsync...; ext4: commit=N",
        ),
        "mkfsopts": Option(
            parse_mkfs_options,
            default=(),
            help="mkfs options NAME=VALUE, comma-separated: label, inode_size; ext4: reserved "
            "(percent for root, default 0), inode_ratio, journal=yes|no; xfs: reflink=0|1",
        ),
        "uid": Option.id(help="owner of the volume's top directory"),
        "gid": Option.id(help="group of the volume's top directory"),
        "mode": Option.mode(help="permissions of the volume's top directory, like 0750"),
        "encrypt": Option.boolean(
            default=False,
            help="encrypt the volume at rest (ext4 native encryption); needs -o passphrase=",
        ),
        "passphrase": Option.secret_ref(
            help="with encrypt=true: secret:NAME, resolved at create and at every attach from "
            "the plugin's --secrets-dir or DOCKVOL_SECRET_<NAME>",
        ),
        # With a cluster registry: one node at a time (the only mode a filesystem image allows).
        "access": Option(
            _parse_access,
            default="single-node",
            help="single-node (the only mode): with a cluster registry, one node at a time "
            "mounts the volume; others are refused until it unmounts",
        ),
    }
    needs_mount_privileges: ClassVar[bool] = True

    def __init__(self, root: Path, context: HostContext | None = None) -> None:
        super().__init__(root, context)
        ctx = self.context
        #: True when ``root`` is shared by several hosts: images stay on the shared root, mounts
        #: move to this node's own ``local_dir`` (a mount is a per-host thing, and a mountpoint
        #: on the shared filesystem would be one directory for every node).
        self.clustered = ctx.shared_root
        mounts = (
            ctx.local_dir / "mounts"
            if ctx.shared_root and ctx.local_dir is not None
            else root / "mounts"
        )
        self.layout = Layout(root, root / "images", mounts, self.clustered)
        self.images, self.mounts = self.layout.images, self.layout.mounts
        #: With a cluster registry: takes a volume's single-node hold for this node, or raises
        #: DriverError naming the holder.
        self.cluster_hold: Callable[[str], None] | None = (
            ctx.cluster.acquire if ctx.cluster is not None else None
        )
        self._attacher = Attacher(self.layout, State())
        self._state = self._attacher.state
        self._recovery = Recovery(self._attacher)

    # -- paths ----------------------------------------------------------------------------------
    def image_path(self, volume: Volume) -> Path:
        return self.layout.image(volume)

    def mountpoint(self, volume: Volume) -> Path:
        return self.layout.mountpoint(volume)

    def served(self, volume: Volume) -> Path:
        """The directory containers get: the filesystem's root, or its encrypted directory."""
        return self.layout.served(volume)

    # -- start ----------------------------------------------------------------------------------
    def setup(self) -> None:
        if self.clustered and not self.root.is_dir():
            # Never create a shared root: a missing one usually means the shared filesystem is
            # not mounted, and images made on the local disk would diverge between nodes.
            raise DriverError(
                f"shared root {self.root} does not exist: mount the shared filesystem there on "
                "every node (the same path everywhere), then start the plugin"
            )
        for d, mode in ((self.root, 0o711), (self.images, 0o700), (self.mounts, 0o711)):
            with os_errors(f"creating {d}", "check --root: it must be a writable local directory"):
                d.mkdir(mode=mode, parents=True, exist_ok=True)
                if d.is_symlink():
                    raise OSError(0, "it is a symbolic link (refused)")
        missing = [t for t in _REQUIRED_TOOLS if shutil.which(t) is None]
        if missing:
            raise DriverError(
                f"the block driver needs {', '.join(missing)}: install util-linux and e2fsprogs"
            )
        if any(shutil.which(t) is None for t in _XFS_TOOLS):
            log.warning("xfsprogs is not installed: volumes with -o fs=xfs will fail")
        self._recovery.sweep_loops()

    def recover(self, volume: Volume, mountpoint: Path | None) -> Path | None:
        return self._recovery.recover(volume, mountpoint, self.cluster_hold)

    def unclaimed(self) -> dict[str, str]:
        """Settle our loop devices that were mounted at start but that no record claimed (see
        recovery.py). Call after :meth:`recover` has run for every known volume (the driver
        also does it once, at its first call after start). Returns what is left (key -> device)."""
        return self._recovery.unclaimed()

    def audit(self, volumes: Sequence[Volume]) -> list[str]:
        return self._recovery.audit(volumes)

    # -- lifecycle ------------------------------------------------------------------------------
    def create(self, volume: Volume) -> None:
        self._recovery.settle_once()
        images.create(self.layout, volume)

    def remove(self, volume: Volume) -> None:
        self._recovery.settle_once()
        self._attacher.refuse_if_attached(volume)
        images.remove(self.layout, volume, self.image_path(volume))

    def mount(self, volume: Volume) -> Path:
        self._recovery.settle_once()
        self._refuse_if_fenced(volume)
        self._attacher.attach_and_mount(volume)
        if self._state.fenced_reason(volume.key) is not None:
            # Fenced while this Mount was attaching (fence may run on any thread): fence what
            # this Mount made, too.
            self.fence(volume, self.mountpoint(volume))
            self._refuse_if_fenced(volume)
        served = self.served(volume)
        apply_ownership(volume, served)
        return served

    def unmount(self, volume: Volume) -> None:
        self._recovery.settle_once()
        key = self.layout.key(volume)
        if self._state.fenced_reason(key) is not None:
            # Fence released what it could; what containers held is freed by the kernel when
            # they go (autoclear). Nothing here may touch a device another node may use now.
            self._state.forget(key)
            return
        mp = self.mountpoint(volume)
        loops = loop.backing(self.image_path(volume))
        if not loops:
            self._attacher.release(volume, mp, None, None)  # a mount whose device is gone
        for lp in loops:
            self._attacher.release(volume, mp, lp.device, lp.devnum)
        self._state.forget(key)

    def fence(self, volume: Volume, mountpoint: Path) -> bool:
        """Stop every write to this volume on this host now (see fence.py): the filesystem is
        shut down after committing its journal, the key of an encrypted volume removed, the
        mount and loop device released as soon as nothing holds them. Mount then refuses it
        until the plugin restarts."""
        why = f"fenced at {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC"
        return fence_volume(self._attacher, volume, why)

    def _refuse_if_fenced(self, volume: Volume) -> None:
        why = self._state.fenced_reason(self.layout.key(volume))
        if why is not None:
            raise DriverError(
                f"volume {volume.name!r} was fenced on this node ({why}): this node could no "
                f"longer prove it alone holds it, and another node may use it now; restart the "
                f"containers that used it here and restart the plugin before mounting it here "
                f"again"
            )

    # -- status ---------------------------------------------------------------------------------
    def status(self, volume: Volume, mountpoint: Path | None) -> Mapping[str, Any]:
        # Every Get lands here: in-memory state and a few syscalls, never a command.
        att = self._state.attachment(volume.key)
        out: dict[str, Any] = {
            "fs": fs_of(volume).name,
            "attached": att is not None,
            "size": nominal_size(volume),
        }
        if encrypted(volume):
            out["encrypted"] = True
        if self._state.fenced_reason(volume.key) is not None:
            out["fenced"] = True
        try:
            st = os.stat(self.image_path(volume))
            out["allocated"] = st.st_blocks * 512
        except OSError:
            out["problem"] = "the image file is missing"
        if att is None:
            return out
        try:
            top = os.stat(att.mountpoint)
            vfs = os.statvfs(att.mountpoint)
        except OSError as exc:
            out["problem"] = f"cannot read the mountpoint: {exc.strerror}"
            return out
        if f"{os.major(top.st_dev)}:{os.minor(top.st_dev)}" != att.devnum:
            # Unmounted behind our back: say so rather than show the host's disk.
            out["attached"] = False
            out["problem"] = f"{att.device} is no longer mounted; the next mount repairs it"
            return out
        out["device"] = att.device
        out["used"] = (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize
        out["free"] = vfs.f_bavail * vfs.f_frsize
        return out

    # -- resize ---------------------------------------------------------------------------------
    def resize(self, volume: Volume, size: int, mountpoint: Path | None) -> None:
        self._recovery.settle_once()
        self._refuse_if_fenced(volume)
        resize_volume(self._attacher, volume, size)
