"""The base class a plugin author subclasses: the only storage code in a plugin."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from .context import HostContext
from .errors import DriverError
from .options import Option
from .volume import Volume

Scope = Literal["local", "global"]
Sharing = Literal["single-node", "multi-node"]


class Driver:
    """What a volume *is* on this host.

    Subclass it, declare ``options``, and implement ``create``, ``remove``, ``mount`` and
    ``unmount``. The framework calls them with validated volumes, one call at a time per volume,
    off the event loop (blocking I/O is fine; unless the class sets ``quick_writes``). It owns everything else: names, option parsing,
    reference counts, idempotency, durable state, the HTTP protocol. ``mount`` runs only for the
    first user of a volume and ``unmount`` only after the last one leaves.

    Raise :class:`DriverError` with a message for the user when something fails.
    """

    #: Options accepted by ``docker volume create -o``; anything else is refused.
    options: ClassVar[Mapping[str, Option]] = {}
    #: ``local``: the volume exists on this host only. ``global``: on every host of a cluster.
    scope: ClassVar[Scope] = "local"
    #: Needs CAP_SYS_ADMIN and /dev (it mounts filesystems): used to package a managed plugin.
    needs_mount_privileges: ClassVar[bool] = False
    #: How many nodes may use one volume at once (CSI access modes, Swarm's ``--scope``):
    #: ``single-node`` (a local directory, a filesystem image) or ``multi-node`` (shared storage
    #: every node mounts). Modes beyond it are refused.
    sharing: ClassVar[Sharing] = "single-node"

    #: ``status`` depends only on the volume (name, key, options) and its mountpoint, not on
    #: time or usage: the framework then calls it once per change of the volume instead of on
    #: every Get, and the engine's hottest call is answered from a cached reply.
    status_is_static: ClassVar[bool] = False

    #: ``create``, ``remove``, ``mount`` and ``unmount`` are a few local metadata calls (mkdir,
    #: rename, chmod) that never wait on a device, the network or a child process: the
    #: framework then runs them on its event loop, which saves two thread switches per call.
    quick_writes: ClassVar[bool] = False

    def __init__(self, root: Path, context: HostContext | None = None) -> None:
        #: The directory where this driver keeps its volumes (``--root``).
        self.root = root
        #: Facts about this host: plugin name, node name, a node-local directory, whether
        #: ``root`` is shared by several hosts, the cluster's single-node hold.
        self.context = context if context is not None else HostContext.standalone()

    def setup(self) -> None:
        """Called once at start, before anything else (create directories, check tools)."""
        self.root.mkdir(parents=True, exist_ok=True)

    def create(self, volume: Volume) -> None:
        """Make the volume exist. Called once per volume (the framework handles repeats)."""
        raise NotImplementedError

    def remove(self, volume: Volume) -> None:
        """Delete the volume. Never called while it is mounted."""
        raise NotImplementedError

    def mount(self, volume: Volume) -> Path:
        """Make the volume usable and return the host path containers will see."""
        raise NotImplementedError

    def unmount(self, volume: Volume) -> None:
        """The last user has gone: release what ``mount`` took (nothing, for a plain directory)."""

    def status(self, volume: Volume, mountpoint: Path | None) -> Mapping[str, Any]:
        """Extra fields for ``docker volume inspect``'s Status. Called on the event loop on every
        Get (once per change with ``status_is_static``): keep it cheap and never block (no
        network, no subprocesses)."""
        return {}

    def recover(self, volume: Volume, mountpoint: Path | None) -> Path | None:
        """Called once per known volume at start, before serving.

        ``mountpoint`` is where the volume was mounted when the plugin last ran, if containers
        still hold it (their mount records survived), else ``None``. Make reality match: mount
        again what must be mounted, release what must not be. Return the mountpoint now in use
        (or ``None``). Raise :class:`DriverError` to report a volume that cannot be recovered: it
        stays registered, so the engine loses nothing.
        """
        return mountpoint

    def audit(self, volumes: Sequence[Volume]) -> list[str]:
        """Called once at start, after ``recover``, with every known volume.

        Report storage of this driver that no volume explains (a leftover directory, a loop device
        or mount of ours) as messages for the plugin's health. Clean it up only when it is
        provably unused; otherwise leave it and say so.
        """
        return []

    def resize(self, volume: Volume, size: int, mountpoint: Path | None) -> None:
        """Grow the volume to ``size`` bytes (``dockvol volume resize``)."""
        raise DriverError(f"driver {type(self).__name__} cannot resize volumes")

    def fence(self, volume: Volume, mountpoint: Path) -> bool:
        """Stop every write to this mounted volume on this host, now.

        Called (off the event loop) when this host can no longer prove that it alone holds a
        single-node volume: another node may take it soon. Make the storage refuse writes
        (containers then get I/O errors) and release it where nothing holds it; never block for
        long. Return ``True`` when the volume is fenced, ``False`` when this driver cannot fence
        (a plain directory on a shared filesystem): the framework reports which it was.
        """
        return False
