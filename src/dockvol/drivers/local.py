"""The ``local`` driver: a directory per volume under ``--root``.

Like the engine's built-in ``local`` driver, but its volumes survive plugin restarts with their
mount records, take ``uid``/``gid``/``mode`` for their top directory, and can be retained on
remove.

On disk, under ``--root``: ``KEY/`` is a volume's data; ``.KEY.retained`` marks data kept by
``on_remove=retain`` (a volume created again with that name adopts the data *and* the retain);
``.trash/`` holds removed volumes until they are deleted, just after the reply (and at start,
after a crash). Keys never start with a dot, so none of these can be a volume.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import select
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from dockvol import Driver, DriverError, Option, Volume
from dockvol.host import child, fsync_dir, is_real_dir, mounts_under, remove_tree

log = logging.getLogger("dockvol.local")
TRASH = ".trash"


class LocalDriver(Driver):
    options: ClassVar[Mapping[str, Option]] = {
        "uid": Option.id(help="owner (numeric uid) of the volume's top directory"),
        "gid": Option.id(help="group (numeric gid) of the volume's top directory"),
        "mode": Option.mode(help="permissions of the volume's top directory, like 0755"),
        "on_remove": Option.choice(
            "delete",
            "retain",
            default="delete",
            help="delete: remove the data with the volume; retain: forget the volume, keep its data",
        ),
    }

    # Its status (path, on_remove) changes only with the volume itself.
    status_is_static: ClassVar[bool] = True
    # mkdir, chmod, rename: done on the service's event loop, without a thread switch.
    quick_writes: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Not inherited: a subclass's writes may wait (the shared driver's root is a network
        # filesystem, a test driver blocks on purpose), so it declares quick writes itself.
        if "quick_writes" not in cls.__dict__:
            cls.quick_writes = False

    def setup(self) -> None:
        super().setup()
        self._mounts = _MountsUnder(self.root)
        # One thread deletes removed volumes, after their Remove was answered.
        self._trash: queue.SimpleQueue[Path] = queue.SimpleQueue()
        threading.Thread(target=self._empty_trash, name="dockvol-trash", daemon=True).start()
        self._sweep_trash()  # removals a crash interrupted

    def _dir(self, volume: Volume) -> Path:
        return child(self.root, volume.key)

    def _retained_mark(self, volume: Volume) -> Path:
        return self.root / f".{child(self.root, volume.key).name}.retained"

    def on_remove(self, volume: Volume) -> str:
        """``retain`` or ``delete``: as given at create, else as the adopted data was kept."""
        given = volume.raw_options.get("on_remove")
        if given is not None:
            return given
        return "retain" if self._retained_mark(volume).exists() else "delete"

    def create(self, volume: Volume) -> None:
        path = self._dir(volume)
        mark = self._retained_mark(volume)
        try:
            path.mkdir(mode=0o755)
        except FileExistsError:
            if not is_real_dir(path):
                raise DriverError(
                    f"{path} exists and is not a directory; move it away and create the volume again"
                ) from None
            # Data retained by an earlier volume of the same name (on_remove=retain): the key
            # is derived from the name, so creating it again gives that data back, still
            # retained unless this create says on_remove=delete.
            log.info(
                "volume %r adopts the existing data in %s (on_remove=%s)",
                volume.name,
                path,
                self.on_remove(volume),
            )
        except OSError as exc:
            raise DriverError(f"cannot create {path}: {exc.strerror}") from None
        else:
            mark.unlink(missing_ok=True)  # a mark without data: nothing to keep
        if volume.raw_options.get("on_remove") == "delete":
            mark.unlink(missing_ok=True)
        # 0755 as the engine's local driver: readable by a container's non-root user.
        self._apply_owner(volume, path, default_mode=0o755)

    def _apply_owner(self, volume: Volume, path: Path, default_mode: int | None) -> None:
        uid, gid, mode = (volume.options.get(k) for k in ("uid", "gid", "mode"))
        if mode is None:
            mode = default_mode
        try:
            if uid is not None or gid is not None:
                os.chown(
                    path,
                    -1 if uid is None else uid,
                    -1 if gid is None else gid,
                    follow_symlinks=False,
                )
            if mode is not None:
                os.chmod(path, mode)
        except OSError as exc:
            raise DriverError(f"cannot set owner or mode of {path}: {exc.strerror}") from None

    def remove(self, volume: Volume) -> None:
        path = self._dir(volume)
        if self.on_remove(volume) == "retain":
            mark = self._retained_mark(volume)
            mark.touch(mode=0o600)
            fsync_dir(self.root)
            log.warning("volume %r removed; its data is retained in %s", volume.name, path)
            return
        if not is_real_dir(path):
            remove_tree(self.root, path)  # refuses a symlink or file in its place, or is a no-op
            return
        try:
            # An empty volume (most are, at rm) goes in one atomic syscall: nothing to delete
            # after the reply, and nothing reached through a mount (rmdir of a mount point fails
            # with EBUSY and the checks below run).
            os.rmdir(path)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY):
                raise DriverError(f"cannot remove {path}: {exc.strerror}") from None
        live = self._mounts.under(path)
        if live:
            raise DriverError(
                f"refusing to delete {path}: something is still mounted there "
                f"({', '.join(live[:3])}); unmount it first"
            )
        # Out of the way at once (one rename), deleted after the reply: removing a large volume
        # must not hold the engine, and a crash in between leaves trash that start-up deletes,
        # never a half-deleted volume under its name.
        trash = self.root / TRASH
        gone = trash / f"{path.name}.{uuid.uuid4().hex[:8]}"
        try:
            os.rename(path, gone)
        except FileNotFoundError:  # the first removal since the trash was emptied at start
            trash.mkdir(mode=0o700, exist_ok=True)
            os.rename(path, gone)
        # Durable before the registry forgets the volume: after a power cut, data still under
        # its name would be adopted by the next volume of that name. (An empty directory that
        # comes back is harmless: that is what a new volume gets anyway.)
        fsync_dir(self.root)
        self._trash.put(gone)

    def _empty_trash(self) -> None:
        while True:
            item = self._trash.get()
            try:
                remove_tree(item.parent, item)
            except (OSError, DriverError) as exc:
                log.warning("could not delete removed volume data %s: %s", item, exc)

    def _sweep_trash(self) -> None:
        trash = self.root / TRASH
        if not is_real_dir(trash):
            return
        items = sorted(os.listdir(trash))
        if items:
            log.info("deleting %d removed volume(s) left by an interrupted removal", len(items))
        for e in items:
            self._trash.put(trash / e)

    def mount(self, volume: Volume) -> Path:
        path = self._dir(volume)
        if not is_real_dir(path):
            raise DriverError(
                f"the directory of volume {volume.name!r} ({path}) is missing or was replaced; "
                "remove the volume and create it again"
            )
        # The engine's copy-up (an empty volume mounted over an image directory) copies that
        # directory's owner and mode onto ours after the copy Mount; the container's own Mount
        # comes next, so asserting the user's -o uid/gid/mode here makes them hold in it.
        if any(volume.options.get(k) is not None for k in ("uid", "gid", "mode")):
            self._apply_owner(volume, path, default_mode=None)
        return path

    def status(self, volume: Volume, mountpoint: Path | None) -> Mapping[str, Any]:
        return {"path": f"{self.root}/{volume.key}", "on_remove": self.on_remove(volume)}

    def recover(self, volume: Volume, mountpoint: Path | None) -> Path | None:
        path = self._dir(volume)
        if not is_real_dir(path):
            if os.path.lexists(path):
                raise DriverError(f"{path} is not a directory; move it away to use the volume")
            # Created in the registry but the plugin died before the directory was made:
            # nothing was ever written to it, so an empty directory is the true state.
            self.create(volume)
        return mountpoint

    def audit(self, volumes: Sequence[Volume]) -> list[str]:
        known = {v.key for v in volumes}
        try:
            entries = sorted(os.listdir(self.root))
        except OSError as exc:
            return [f"cannot list {self.root}: {exc.strerror}"]
        # Left alone: retained volumes and foreign files are the operator's to keep or delete.
        return [
            f"{self.root / e} belongs to no volume (retained data, or left by a crash); "
            "delete it by hand if it is not needed"
            for e in entries
            if e not in known and not e.startswith(".")
        ]


class _MountsUnder:
    """Mount points under ``root``, read again only when this namespace's mount table changed.

    Reading /proc/self/mountinfo costs about 0.1 ms, on every Remove's reply path. The kernel
    flags an open mountinfo with POLLPRI after any mount or unmount in the namespace (proc(5));
    polling it costs a microsecond. The poll comes before the read, so a change during the read
    is seen again at the next call.
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        self._real_root = ""
        self._lock = threading.Lock()
        self._targets: list[str] | None = None
        self._poll: select.poll | None = None
        try:
            fd = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return  # no /proc: read the table on every call
        self._fd = fd  # open for the life of the driver: the poll watches it
        self._poll = select.poll()
        self._poll.register(fd, select.POLLPRI)

    def under(self, path: Path) -> list[str]:
        """Mount points at or below ``path``, a volume's directory (directly under the root)."""
        if self._poll is None or path.parent != self._root:
            return mounts_under(path)
        with self._lock:
            if self._poll.poll(0) or self._targets is None:
                self._targets = mounts_under(self._root)
                self._real_root = os.path.realpath(self._root)
            targets, real_root = self._targets, self._real_root
        # The caller checked that ``path`` is a real directory, not a symlink.
        prefix = f"{real_root}/{path.name}"
        return [t for t in targets if t == prefix or t.startswith(prefix + "/")]


DRIVER = LocalDriver
