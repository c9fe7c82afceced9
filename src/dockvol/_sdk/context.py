"""What a driver may know about the host that runs it: declared here, given at construction."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class ClusterHold(Protocol):
    """A cluster's single-node hold on a volume, for drivers that attach storage one node at a
    time (the block driver on a shared root)."""

    def acquire(self, name: str) -> None:
        """Take the hold on volume ``name`` for this node, or raise :class:`DriverError` naming
        the node that has it. Blocking (a network round trip): call it off the event loop."""


@dataclass(frozen=True, slots=True)
class HostContext:
    """Facts about this host and this plugin, given to a driver when it is made.

    ``plugin``: the name the engine knows the plugin by (``--name``). ``node``: this host's name
    in a cluster (``--node``; the hostname by default). ``local_dir``: a directory on this host
    only, for per-host files such as mount points when ``--root`` is shared by several hosts
    (it is the driver's corner of ``--state``). ``shared_root``: ``--root`` is one filesystem
    seen by several hosts (a cluster registry is in use). ``cluster``: the single-node hold,
    with a cluster registry; ``None`` on a single host.
    """

    plugin: str = "dockvol"
    node: str = ""
    local_dir: Path | None = None
    shared_root: bool = False
    cluster: ClusterHold | None = None

    @classmethod
    def standalone(cls, plugin: str = "dockvol") -> HostContext:
        """One plugin on one host: what a driver gets when nobody says otherwise."""
        return cls(plugin=plugin, node=os.uname().nodename)
