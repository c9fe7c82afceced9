"""A complete third-party volume plugin: RAM-backed volumes with a size limit (tmpfs).

Run it:   dockvol serve --driver tmpfs_driver:TmpfsDriver --name ramdisk
Use it:   docker volume create -d ramdisk -o size=64M scratch
          docker run --rm -v scratch:/scratch busybox sh -c 'df -h /scratch'

dockvol does the rest: names, option checks, reference counts (``mount`` runs for the first
container only, ``unmount`` after the last), durable state, the HTTP protocol.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from dockvol import Driver, DriverError, Option, Volume


class TmpfsDriver(Driver):
    options: ClassVar[Mapping[str, Option]] = {
        "size": Option.size(default=64 << 20, help="the most the volume may hold, like 64M"),
        "mode": Option.mode(default=0o1777, help="permissions of the volume's top directory"),
    }
    needs_mount_privileges = True

    def _dir(self, volume: Volume) -> Path:
        return self.root / volume.key  # the key is safe on disk; the name may be anything

    def create(self, volume: Volume) -> None:
        self._dir(volume).mkdir(exist_ok=True)

    def remove(self, volume: Volume) -> None:
        self._dir(volume).rmdir()  # empty: its tmpfs is gone once unmounted

    def mount(self, volume: Volume) -> Path:
        path = self._dir(volume)
        opts = f"size={volume.options['size']},mode={volume.options['mode']:o}"
        self._run("mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path))
        return path

    def unmount(self, volume: Volume) -> None:
        self._run("umount", str(self._dir(volume)))

    def recover(self, volume: Volume, mountpoint: Path | None) -> Path | None:
        # A tmpfs does not survive a reboot: mount a fresh one if containers still hold it.
        path = self._dir(volume)
        path.mkdir(exist_ok=True)
        if mountpoint is not None and not path.is_mount():
            return self.mount(volume)
        return mountpoint

    def status(self, volume: Volume, mountpoint: Path | None) -> Mapping[str, Any]:
        return {"size": volume.options["size"], "mounted": mountpoint is not None}

    @staticmethod
    def _run(*cmd: str) -> None:
        result = subprocess.run(cmd, capture_output=True, text=True)  # argument list: no shell
        if result.returncode != 0:
            raise DriverError(f"{cmd[0]} failed: {result.stderr.strip()}; is the plugin root?")
