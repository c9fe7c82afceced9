"""The block driver: each volume is a sparse image file with its own filesystem, attached through a
loop device and mounted on first use. The framework counts references; this module only makes the
host match: attached and mounted while anyone uses the volume, detached otherwise."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

from dockvol import Driver, DriverError, HostContext, Option, SecretRef, Volume

from . import encryption, loop, mounttable
from .commands import run
from .filesystems import (
    FILESYSTEMS,
    Filesystem,
    ext4_bytes,
    ext4_encrypted,
    parse_mkfs_options,
    parse_mount_options,
    probe,
)

log = logging.getLogger("dockvol.drivers.block")

#: The size of a volume created without ``-o size=``: sparse, so it costs only what is written.
DEFAULT_SIZE: Final = 10 << 30
_ALIGN: Final = 1 << 20
_REQUIRED_TOOLS: Final = ("losetup", "mount", "umount", "mkfs.ext4", "e2fsck", "resize2fs")
_XFS_TOOLS: Final = ("mkfs.xfs", "xfs_growfs")
#: On a shared root, files of another node's create in progress may be this young: leave them.
NEW_FILE_GRACE: Final = 600.0


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


@dataclass(frozen=True, slots=True)
class Attachment:
    device: str
    devnum: str
    mountpoint: Path


@contextmanager
def _os(what: str, hint: str) -> Iterator[None]:
    """Turn a failing OS call into a :class:`DriverError` saying what failed and what to do."""
    try:
        yield
    except OSError as exc:
        raise DriverError(f"{what} failed: {exc.strerror or exc}; {hint}") from None


def _devnum(device: str) -> str:
    with _os(f"reading {device}", "the plugin needs the host's /dev"):
        rdev = os.stat(device).st_rdev
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def _round_up(size: int) -> int:
    return -(-size // _ALIGN) * _ALIGN


def human(size: int) -> str:
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return f"{size}B"


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
        self.images = root / "images"
        #: True when ``root`` is shared by several hosts: images stay on the shared root, mounts
        #: move to this node's own ``local_dir`` (a mount is a per-host thing, and a mountpoint
        #: on the shared filesystem would be one directory for every node).
        self.clustered = ctx.shared_root
        self.mounts = (
            ctx.local_dir / "mounts"
            if ctx.shared_root and ctx.local_dir is not None
            else root / "mounts"
        )
        #: With a cluster registry: takes a volume's single-node hold for this node, or raises
        #: DriverError naming the holder.
        self.cluster_hold: Callable[[str], None] | None = (
            ctx.cluster.acquire if ctx.cluster is not None else None
        )
        self._lock = threading.Lock()
        self._attached: dict[str, Attachment] = {}
        #: Loop devices of ours found mounted at start, until a record claims them: key -> device.
        self._unclaimed: dict[str, str] = {}
        self._settled = False

    # -- paths ----------------------------------------------------------------------------------
    def _key(self, volume: Volume) -> str:
        key = volume.key
        if not key or "/" in key or "\0" in key or key in (".", ".."):
            raise DriverError(f"volume {volume.name!r} has an unsafe key {key!r}; this is a bug")
        return key

    def image_path(self, volume: Volume) -> Path:
        return self.images / f"{self._key(volume)}.img"

    def mountpoint(self, volume: Volume) -> Path:
        return self.mounts / self._key(volume)

    @staticmethod
    def _fs(volume: Volume) -> Filesystem:
        return FILESYSTEMS[str(volume.options.get("fs") or "ext4")]

    @staticmethod
    def _encrypted(volume: Volume) -> bool:
        return bool(volume.options.get("encrypt"))

    def served(self, volume: Volume) -> Path:
        """The directory containers get: the filesystem's root, or its encrypted directory."""
        mp = self.mountpoint(volume)
        return encryption.served(mp) if self._encrypted(volume) else mp

    @staticmethod
    def _check_encryption_options(volume: Volume, fs: Filesystem) -> None:
        has_passphrase = volume.options.get("passphrase") is not None
        if not BlockDriver._encrypted(volume):
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

    @staticmethod
    def _passphrase(volume: Volume) -> tuple[str, str]:
        """The passphrase, resolved now (never cached), and the name of its secret."""
        ref = volume.options.get("passphrase")
        if not isinstance(ref, SecretRef):
            raise DriverError(
                f"encrypted volume {volume.name!r} has no -o passphrase=secret:NAME; it cannot be "
                f"unlocked"
            )
        return volume.secret("passphrase"), ref.name

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
            with _os(f"creating {d}", "check --root: it must be a writable local directory"):
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
        self._sweep_loops()

    def _sweep_loops(self) -> None:
        """Detach our loop devices that nothing holds (provably unused: no filesystem on them is
        mounted in any namespace); remember the mounted ones for :meth:`recover` to claim."""
        for lp in loop.under(self.images):
            held = loop.held(lp.device)
            if held and self.clustered and not self._mounted_here(lp):
                # Shared root: a device we did not mount may be another node's (when nodes share
                # a kernel) or a copy a container keeps; the next Mount here reuses it anyway.
                continue
            if lp.backing.endswith(".img.new"):
                if not (self.clustered and not held):  # unmounted: maybe a create in progress
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
                    self._unclaimed[key] = lp.device
                continue
            log.warning(
                "detaching unused loop device %s of %s (left by a crash)", lp.device, lp.backing
            )
            try:
                loop.detach(lp.device, lp.backing)
            except DriverError as exc:
                log.warning("%s", exc)

    def _attached_here(self, volume: Volume) -> bool:
        return any(self._mounted_here(lp) for lp in loop.backing(self.image_path(volume)))

    def _mounted_here(self, lp: loop.Loop) -> bool:
        """``lp`` is mounted on our mountpoint of its image, in our mount namespace."""
        key = Path(lp.backing).name.removesuffix(".new").removesuffix(".img")
        entry = mounttable.mounted_at(self.mounts / key)
        return entry is not None and entry.devnum == lp.devnum

    def _drop_interrupted_create(self, lp: loop.Loop) -> None:
        """A crash while create had a new encrypted filesystem mounted (to make its encrypted
        directory): nobody ever used it; unmount it from our mountpoint and detach it. The image
        itself is deleted by :meth:`audit`, or replaced when the volume is created again."""
        mp = self.mounts / Path(lp.backing).name.removesuffix(".img.new")
        log.warning("releasing %s of %s, left by an interrupted create", lp.device, lp.backing)
        try:
            entry = mounttable.mounted_at(mp)
            if entry is not None and entry.devnum == lp.devnum:
                run(["umount", "--", str(mp)], what=f"unmounting {mp}", hint="")
            loop.detach(lp.device, lp.backing)
        except DriverError as exc:
            log.warning("%s", exc)

    def recover(self, volume: Volume, mountpoint: Path | None) -> Path | None:
        key = self._key(volume)
        self._unclaimed.pop(key, None)
        mp, served = self.mountpoint(volume), self.served(volume)
        if mountpoint is not None:
            if Path(mountpoint) != served:
                log.warning(
                    "volume %r was mounted on %s; it is now served from %s",
                    volume.name,
                    mountpoint,
                    served,
                )
            # Records say containers use it: attach and mount again what a crash or reboot lost,
            # and (encrypted) add the key again from the secret.
            if self.cluster_hold is not None and not self._attached_here(volume):
                # Re-attaching after a reboot: another node may have taken the volume once our
                # lease expired. Mounting it here too would corrupt it: only with the hold.
                self.cluster_hold(volume.name)
            try:
                self._attach_and_mount(volume)
            except DriverError:
                # Not unlocked (secret missing or wrong): what is still mounted stays mounted for
                # its containers, and known, so that status and the last Unmount see it.
                for lp in loop.backing(self.image_path(volume)):
                    entry = mounttable.mounted_at(mp)
                    if entry is not None and entry.devnum == lp.devnum:
                        with self._lock:
                            self._attached[key] = Attachment(lp.device, lp.devnum, mp)
                raise
            return served
        if not self.image_path(volume).exists():
            if self.clustered:
                # Another node may be creating it right now (the record comes first): never
                # write an image of the shared root we did not claim. Mount reports it if it stays.
                log.warning("volume %r has no image yet (created on another node?)", volume.name)
                return None
            # A crash between the record and the image (Create records first): nothing can have
            # been written to it yet, so make it now.
            log.warning("volume %r has no image: creating it", volume.name)
            self._create(volume)
            return None
        # Records say nobody uses it: release it, unless another namespace (a container) still
        # mounts it, in which case it stays attached and the next Mount reuses it.
        for lp in loop.backing(self.image_path(volume)):
            users = mounttable.other_namespaces_using(lp.devnum)
            if users and self.clustered and not self._mounted_here(lp):
                continue  # not ours to track: another node's (shared kernel) or a leaked copy
            if users:
                log.warning(
                    "volume %r: no record uses it, but %s is mounted by processes %s; leaving it "
                    "attached (the next mount reuses it)",
                    volume.name,
                    lp.device,
                    users,
                )
                with self._lock:
                    self._attached[key] = Attachment(lp.device, lp.devnum, mp)
                return None
            self._release(volume, mp, lp.device, lp.devnum)
        return None

    def unclaimed(self) -> dict[str, str]:
        """Settle our loop devices that were mounted at start but that no record claimed.

        Call after :meth:`recover` has run for every known volume (the driver also does it once,
        at its first call after start). A device is released only when provably unused: no
        other mount namespace (no container) mounts it and a plain umount succeeds (no process
        has files open in it). The rest is reported and left alone. Returns what is left
        (volume key -> device)."""
        self._settled = True
        for key, device in list(self._unclaimed.items()):
            mp = self.mounts / key
            users: list[int] = []
            try:
                devnum = _devnum(device)
                users = mounttable.other_namespaces_using(devnum)
                if not users:
                    entry = mounttable.mounted_at(mp)
                    if entry is not None and entry.devnum == devnum:
                        if (mp / encryption.HEADER_NAME).exists():
                            encryption.lock(mp, key)
                        run(["umount", "--", str(mp)], what=f"unmounting {mp}", hint="")
                    if not loop.held(device):
                        loop.detach(device, self.images / f"{key}.img")
                        log.warning("released %s of volume key %r: no record used it", device, key)
                        del self._unclaimed[key]
                        continue
            except DriverError as exc:
                log.debug("%s", exc)
            log.warning(
                "loop device %s holds the image of volume key %r, which no record explains, and "
                "is still in use%s: it is left alone; stop its users (findmnt %s; fuser -vm %s) "
                "and restart the plugin",
                device,
                key,
                f" by processes {users}" if users else "",
                device,
                mp,
            )
        return dict(self._unclaimed)

    def audit(self, volumes: Sequence[Volume]) -> list[str]:
        """After :meth:`recover`: report (and, when provably unused, release) storage of ours that
        no volume explains."""
        with self._lock:
            self._settled = True
        problems = [
            f"loop device {device} holds the image of volume key {key!r}, which no record "
            f"explains, and is still in use: stop its users (findmnt {device}) and restart the plugin"
            for key, device in self.unclaimed().items()
        ]
        known = {v.key for v in volumes}
        try:
            names = sorted(os.listdir(self.images))
        except OSError as exc:
            return [*problems, f"cannot list {self.images}: {exc.strerror}"]
        attached = {lp.backing for lp in loop.under(self.images)}
        for name in names:
            path = self.images / name
            if self.clustered and self._young(path):
                continue  # on a shared root: maybe another node's create in progress
            if name.endswith(".img.new") and os.path.realpath(path) not in attached:
                # A create interrupted before its filesystem was complete: never held data.
                with suppress(OSError):
                    path.unlink()
                    log.warning("deleted %s, left by an interrupted create", path)
            elif name.endswith(".img") and name.removesuffix(".img") not in known:
                problems.append(
                    f"image {path} belongs to no volume (its record was lost?): create the volume "
                    f"again with the same size and fs to reuse its data, or delete the file"
                )
        return problems

    @staticmethod
    def _young(path: Path) -> bool:
        try:
            return time.time() - path.stat().st_mtime < NEW_FILE_GRACE
        except OSError:
            return True  # gone meanwhile: nothing to do

    def _settle_once(self) -> None:
        if not self._settled:
            with self._lock:
                if self._settled:
                    return
                self._settled = True
            self.unclaimed()

    # -- lifecycle ------------------------------------------------------------------------------
    def create(self, volume: Volume) -> None:
        self._settle_once()
        self._create(volume)

    def _create(self, volume: Volume) -> None:
        fs = self._fs(volume)
        size = _round_up(int(volume.options.get("size") or DEFAULT_SIZE))
        if size < fs.min_size:
            raise DriverError(
                f"size {human(size)} is too small for {fs.name}: use at least {human(fs.min_size)}"
            )
        # Refuse options that do not apply to this filesystem now, not at the first mount.
        fs.mount_options(volume.options.get("mountopts") or ())
        self._check_encryption_options(volume, fs)
        encrypted = self._encrypted(volume)
        image = self.image_path(volume)
        tmp = image.with_name(image.name + ".new")
        features = ("encrypt",) if encrypted else ()
        args = fs.mkfs_args(tmp, volume.options.get("mkfsopts") or (), features)
        if image.exists():
            self._adopt(volume, image, fs, size)
            return
        # Resolved before anything is written: a missing secret fails the create cleanly.
        passphrase = self._passphrase(volume)[0] if encrypted else ""
        hint = f"check free space and permissions under {self.images}"
        try:
            with _os(f"creating the image file {tmp}", hint):
                tmp.unlink(missing_ok=True)
                with open(tmp, "xb") as f:
                    f.truncate(size)  # sparse: only what is written takes space
            run(
                args, what=f"creating the {fs.name} filesystem of volume {volume.name!r}", hint=hint
            )
            if encrypted:
                self._setup_encryption(volume, tmp, passphrase)
            with _os(f"saving the image file {image}", hint):
                os.rename(tmp, image)
                self._fsync_dir(self.images)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _setup_encryption(self, volume: Volume, image: Path, passphrase: str) -> None:
        """Mount the new filesystem once to make its encrypted directory (see encryption.py)."""
        mp = self.mountpoint(volume)
        entry = mounttable.mounted_at(mp)
        if entry is not None:
            raise DriverError(
                f"creating volume {volume.name!r}: {mp} already has a filesystem mounted "
                f"({entry.source}); unmount it (umount {mp}) and try again"
            )
        device = loop.attach(image)
        try:
            self._make_mountpoint(mp)
            run(
                ["mount", "-t", "ext4", "--", device, str(mp)],
                what=f"mounting the new filesystem of volume {volume.name!r} ({device}) on {mp}",
                hint="check the kernel log (dmesg)",
            )
            try:
                encryption.setup(mp, passphrase)
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

    def _adopt(self, volume: Volume, image: Path, fs: Filesystem, size: int) -> None:
        """An image for this key survives from an earlier plugin (state lost, or a crash between
        mkfs and the record): keep its data if it matches, refuse otherwise. Never overwrite."""
        found = probe(image)
        with _os(f"reading {image}", f"check permissions under {self.images}"):
            current = image.stat().st_size
        if found == "ext4" and ext4_encrypted(image) != self._encrypted(volume):
            # Reusing it would serve ciphertext names, or claim encryption that is not there.
            was = "encrypted" if ext4_encrypted(image) else "not encrypted"
            raise DriverError(
                f"an image for volume {volume.name!r} already exists at {image} and is {was}, "
                f"left by an earlier plugin: move or delete it, or create the volume "
                f"{'with' if was == 'encrypted' else 'without'} -o encrypt=true to keep its data"
            )
        if found == fs.name and current == size:
            log.warning("volume %r: reusing the existing image %s", volume.name, image)
            return
        raise DriverError(
            f"an image for volume {volume.name!r} already exists at {image} ({found or 'unknown'} "
            f"filesystem, {human(current)}), left by an earlier plugin: move or delete it, or create "
            f"the volume with -o fs={found or 'ext4'} -o size={human(current)} to keep its data"
        )

    def remove(self, volume: Volume) -> None:
        self._settle_once()
        key = self._key(volume)
        image, mp = self.image_path(volume), self.mountpoint(volume)
        loops = loop.backing(image)
        with self._lock:
            att = self._attached.get(key)
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
                f"volume {volume.name!r} is still attached ({', '.join(devices)}): "
                f"stop the containers using it (docker ps -a --filter volume={volume.name}) and try again"
            )
        entry = mounttable.mounted_at(mp)
        if entry is not None:
            raise DriverError(
                f"volume {volume.name!r}: {mp} is still mounted ({entry.source}); refusing to delete "
                f"through a live mount: unmount it (umount {mp}) and try again"
            )
        hint = f"check permissions under {self.root}"
        with _os(f"deleting the image {image}", hint):
            image.unlink(missing_ok=True)
            image.with_name(image.name + ".new").unlink(missing_ok=True)
            self._fsync_dir(self.images)
        try:
            mp.rmdir()  # rmdir, never a recursive delete: an empty directory only
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("volume %r removed, but %s was left: %s", volume.name, mp, exc.strerror)

    def mount(self, volume: Volume) -> Path:
        self._settle_once()
        self._attach_and_mount(volume)
        served = self.served(volume)
        self._apply_ownership(volume, served)
        return served

    def unmount(self, volume: Volume) -> None:
        self._settle_once()
        mp = self.mountpoint(volume)
        loops = loop.backing(self.image_path(volume))
        if not loops:
            self._release(volume, mp, None, None)  # a mount whose device is gone
        for lp in loops:
            self._release(volume, mp, lp.device, lp.devnum)
        with self._lock:
            self._attached.pop(self._key(volume), None)

    # -- status ---------------------------------------------------------------------------------
    def status(self, volume: Volume, mountpoint: Path | None) -> Mapping[str, Any]:
        # Every Get lands here: in-memory state and a few syscalls, never a command.
        with self._lock:
            att = self._attached.get(volume.key)
        out: dict[str, Any] = {"fs": self._fs(volume).name, "attached": att is not None}
        if self._encrypted(volume):
            out["encrypted"] = True
        try:
            st = os.stat(self.image_path(volume))
            out["size"] = st.st_size
            out["allocated"] = st.st_blocks * 512
        except OSError:
            out["size"] = None
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
        self._settle_once()
        fs = self._fs(volume)
        image = self.image_path(volume)
        size = _round_up(size)
        with _os(
            f"reading the image {image}", "the volume's image is missing: recreate the volume"
        ):
            current = image.stat().st_size
        if size < current:
            raise DriverError(
                f"volume {volume.name!r} is {human(current)}; shrinking is not supported: give a "
                f"size of at least {human(current)}"
            )
        if size > current:
            with _os(f"growing the image {image}", f"check free space under {self.images}"):
                os.truncate(image, size)
        loops = loop.backing(image)
        for lp in loops:
            loop.refresh_capacity(lp.device)
        with self._lock:
            in_use = volume.key in self._attached
        if in_use:
            # Growing needs no key: an encrypted volume is not unlocked again for it.
            att = self._attach_and_mount(volume, unlock=False)
            self._grow_online(volume, fs, att)
        elif fs.name == "ext4" and not loops:
            self._grow_ext4_offline(volume, image)
        else:
            # Not in use: mount it for the time of the resize (xfs grows only while mounted; an
            # attached ext4 has a live filesystem that only an online resize may touch).
            att = self._attach_and_mount(volume, record=False, unlock=False)
            try:
                self._grow_online(volume, fs, att)
            finally:
                self._release(volume, att.mountpoint, att.device, att.devnum)

    def _grow_online(self, volume: Volume, fs: Filesystem, att: Attachment) -> None:
        try:
            run(
                fs.grow_args(att.device, att.mountpoint),
                what=f"growing the {fs.name} filesystem of volume {volume.name!r}",
                hint="the image is already larger; run the resize again, or check the plugin's log",
            )
        except DriverError as exc:
            if fs.name == "ext4" and "Permission denied" in exc.message:
                # The kernel wants CAP_SYS_RESOURCE for an online ext4 resize.
                raise DriverError(
                    f"volume {volume.name!r} is in use and growing a mounted ext4 filesystem needs "
                    f"CAP_SYS_RESOURCE, which the plugin lacks: the image is already grown, and "
                    f"the filesystem grows when the volume is next attached (after its containers "
                    f"stop); or give the plugin CAP_SYS_RESOURCE and resize again"
                ) from None
            raise

    def _grow_ext4_offline(self, volume: Volume, image: Path) -> None:
        what = f"growing the ext4 filesystem of volume {volume.name!r}"
        hint = f"check it with e2fsck -f {image} and resize again"
        # resize2fs insists on a freshly checked filesystem; -p fixes only what is safe (exit 1).
        run(
            ["e2fsck", "-f", "-p", "--", str(image)],
            what=f"{what} (checking it)",
            hint=hint,
            ok=(0, 1),
        )
        run(["resize2fs", "--", str(image)], what=what, hint=hint)

    def _pending_ext4_grow(self, image: Path) -> bool:
        """An earlier resize grew the image but could not grow the mounted filesystem."""
        fs_bytes = ext4_bytes(image)
        try:
            size = image.stat().st_size
        except OSError:
            return False
        return fs_bytes is not None and size - fs_bytes >= _ALIGN

    # -- attach / release -----------------------------------------------------------------------
    def _attach_and_mount(
        self, volume: Volume, *, record: bool = True, unlock: bool = True
    ) -> Attachment:
        """Attached and mounted on our mountpoint, reusing what is already there (idempotent: after
        a crash, a repeat, or a record whose device is gone). An encrypted volume is unlocked with
        its passphrase, resolved now, unless ``unlock`` is false."""
        fs = self._fs(volume)
        image, mp = self.image_path(volume), self.mountpoint(volume)
        if not image.is_file():
            raise DriverError(
                f"the image of volume {volume.name!r} is missing ({image}): its data is gone; "
                f"remove the volume (docker volume rm) and create it again"
            )
        loops = loop.backing(image)
        if len(loops) > 1:
            raise DriverError(
                f"the image of volume {volume.name!r} is attached to several loop devices "
                f"({', '.join(lp.device for lp in loops)}); detach the unused ones (losetup -d) and retry"
            )
        fresh = not loops
        if fresh and fs.name == "ext4" and self._pending_ext4_grow(image):
            self._grow_ext4_offline(volume, image)
        device = loop.attach(image) if fresh else loops[0].device
        mounted_here = False
        try:
            devnum = _devnum(device)
            self._make_mountpoint(mp)
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
            elif entry.devnum != devnum:
                raise DriverError(
                    f"{mp} already has another filesystem mounted ({entry.source}); unmount it "
                    f"(umount {mp}) and try again"
                )
            if unlock and self._encrypted(volume):
                passphrase, secret_name = self._passphrase(volume)
                encryption.unlock(mp, passphrase, volume.name, secret_name)
        except BaseException:
            # Undo only what this call did: an existing mount may have users.
            if mounted_here:
                with suppress(DriverError):
                    run(["umount", "--", str(mp)], what=f"unmounting {mp}", hint="")
            if fresh:
                self._detach_quietly(volume, device)
            raise
        att = Attachment(device, devnum, mp)
        if record:
            with self._lock:
                self._attached[volume.key] = att
        return att

    def _release(self, volume: Volume, mp: Path, device: str | None, devnum: str | None) -> None:
        """Unmount our mountpoint and detach the device (if nothing else holds it)."""
        entry = mounttable.mounted_at(mp)
        if entry is not None and (devnum is None or entry.devnum == devnum):
            if self._encrypted(volume):
                # Before unmounting: a copy of the mount in another namespace keeps the
                # filesystem (and its keyring) alive; without the key it holds only ciphertext.
                encryption.lock(mp, volume.name)
            run(
                ["umount", "--", str(mp)],
                what=f"unmounting volume {volume.name!r} from {mp}",
                hint=f"a process on the host still uses it: find it with fuser -vm {mp}, stop it, "
                f"and try again",
            )
        if device is None:
            return
        if loop.held(device):
            # Mounted in another namespace (a leaked mount): detaching only marks it to be freed by
            # the kernel once that mount goes, so nothing is torn down under its user.
            log.warning(
                "volume %r: %s is still mounted elsewhere; it will be freed when released",
                volume.name,
                device,
            )
        # False: already gone (auto-cleared, or detached by someone else): nothing to release.
        loop.detach(device, self.image_path(volume))

    def _make_mountpoint(self, mp: Path) -> None:
        with _os(f"creating the mountpoint {mp}", f"check permissions under {self.mounts}"):
            mp.mkdir(mode=0o755, exist_ok=True)
            if mp.is_symlink() or not stat.S_ISDIR(mp.lstat().st_mode):
                raise OSError(0, "it is not a directory (refused)")

    def _detach_quietly(self, volume: Volume, device: str) -> None:
        try:
            loop.detach(device, self.image_path(volume))
        except DriverError as exc:
            log.warning("%s", exc)

    def _apply_ownership(self, volume: Volume, mp: Path) -> None:
        uid, gid, mode = (volume.options.get(k) for k in ("uid", "gid", "mode"))
        hint = "check the uid/gid/mode options"
        with _os(f"setting the owner and mode of {mp}", hint):
            if uid is not None or gid is not None:
                os.chown(mp, -1 if uid is None else int(uid), -1 if gid is None else int(gid))
            if mode is not None:
                os.chmod(mp, int(mode))
        # An empty lost+found makes a new volume look non-empty: the engine would then skip copying
        # the image's content in, and some programs (initdb) refuse such a directory. fsck
        # recreates it when it needs it. (An encrypted volume serves a subdirectory: no lost+found.)
        if not self._encrypted(volume):
            with suppress(OSError):
                (mp / "lost+found").rmdir()

    @staticmethod
    def _fsync_dir(d: Path) -> None:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
