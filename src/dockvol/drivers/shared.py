"""The ``shared`` driver: a directory per volume on a filesystem every node mounts at ``--root``.

Run it with a cluster registry so that every node knows every volume::

    dockvol serve --driver shared --root /mnt/shared/volumes \\
        --registry etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379 --node "$(hostname)"

``--root`` must be the same shared filesystem (NFS, CephFS, GlusterFS...) at the same path on
every node: a volume created on one node is then the same directory everywhere, and its mount
point is the same path on every node. Volumes are ``access=multi`` by default (every node may
mount at once); ``-o access=single-node`` lets only one node at a time mount it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from dockvol import DriverError, Option, Scope, Sharing, Volume

from .local import LocalDriver


class SharedDriver(LocalDriver):
    scope: ClassVar[Scope] = "global"
    sharing: ClassVar[Sharing] = "multi-node"
    options: ClassVar[Mapping[str, Option]] = {
        **LocalDriver.options,
        "access": Option.access("multi"),
    }

    def setup(self) -> None:
        # Never create the root: a missing root usually means the shared filesystem is not
        # mounted, and volumes made on the local disk would silently diverge between nodes.
        if not self.root.is_dir():
            raise DriverError(
                f"shared root {self.root} does not exist: mount the shared filesystem there on "
                "every node (the same path everywhere), then start the plugin"
            )
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise DriverError(f"shared root {self.root} is not writable by the plugin")
        super().setup()  # the root exists: only the local driver's own start-up remains

    def status(self, volume: Volume, mountpoint: Path | None) -> Mapping[str, Any]:
        return {"path": str(self.root / volume.key), "access": volume.options.get("access")}


DRIVER = SharedDriver
