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

import logging
import os
import queue
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

    def setup(self) -> None:
        super().setup()
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
        live = mounts_under(path)
        if live:
            raise DriverError(
                f"refusing to delete {path}: something is still mounted there "
                f"({', '.join(live[:3])}); unmount it first"
            )
        # Out of the way at once (one rename), deleted after the reply: removing a large volume
        # must not hold the engine, and a crash in between leaves trash that start-up deletes,
        # never a half-deleted volume under its name.
        trash = self.root / TRASH
        trash.mkdir(mode=0o700, exist_ok=True)
        gone = trash / f"{path.name}.{uuid.uuid4().hex[:8]}"
        os.rename(path, gone)
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


DRIVER = LocalDriver
