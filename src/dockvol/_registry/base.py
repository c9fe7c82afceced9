"""The registry interface: what the volume service needs from durable state.

Reads (``get``, ``all``) come from an in-memory view and never block: they serve the engine's
hottest calls. Writes are durable before they return (the caller replies to the engine only
after), may block (call them off the event loop), and update the view. An implementation may
share the records with other hosts (a cluster store): then ``create`` must be atomic across
hosts and the view must follow changes made elsewhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

#: One shared empty mapping for records without options or mounts: most of them, and 10,000
#: volumes should not cost 20,000 empty dicts. Read-only, so sharing it is safe.
EMPTY: Mapping[str, Any] = MappingProxyType({})


class Conflict(Exception):
    """``create`` of a name that already exists (possibly created by another host meanwhile)."""

    def __init__(self, existing: VolumeRecord) -> None:
        super().__init__(existing.name)
        self.existing = existing


@dataclass(frozen=True, slots=True)
class MountRecord:
    """One engine mount ID holding a volume: ``count`` Mounts not yet matched by Unmounts."""

    mount_id: str
    count: int
    mountpoint: str
    node: str = ""


@dataclass(frozen=True, slots=True)
class VolumeRecord:
    name: str
    key: str
    options: Mapping[str, str]  # as given by the user (secret options hold references only)
    created_at: datetime
    mounts: Mapping[str, MountRecord] = field(default_factory=lambda: EMPTY)

    @property
    def mountpoint(self) -> str | None:
        for m in self.mounts.values():
            return m.mountpoint
        return None


class Registry(ABC):
    """Durable volume records. One instance per plugin process.

    ``generation`` grows with every change of the in-memory view (here or, for a shared store,
    elsewhere): readers use it to cache what they derive from the view, such as List replies.
    """

    generation: int = 0
    #: Every host of the cluster sees the same records (the service then reports scope global).
    shared: bool = False
    #: Writes only wait on a local disk (no network, no other process): with a driver whose
    #: writes are quick too, the service makes them on its event loop instead of a thread.
    quick_writes: bool = False

    # -- reads: in-memory, never block ---------------------------------------------------------
    @abstractmethod
    def get(self, name: str) -> VolumeRecord | None: ...

    @abstractmethod
    def all(self) -> Iterable[VolumeRecord]:
        """Every volume, as a snapshot: safe to iterate while writes go on."""

    # -- writes: durable before they return -----------------------------------------------------
    @abstractmethod
    def create(self, record: VolumeRecord) -> None:
        """Add a volume; raise :class:`Conflict` if the name exists."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Forget a volume and its mount records (no-op if unknown)."""

    @abstractmethod
    def set_options(self, name: str, options: Mapping[str, str]) -> None: ...

    @abstractmethod
    def set_mount(self, name: str, mount: MountRecord) -> None:
        """Insert or replace the record for ``mount.mount_id``."""

    @abstractmethod
    def delete_mount(self, name: str, mount_id: str) -> None: ...

    # -- cluster hooks: no-ops on a single host -------------------------------------------------
    def acquire(self, name: str) -> None:  # noqa: B027 - optional hook
        """Called before the first mount of ``name`` on this host; raise to refuse the mount
        (for example: a single-node volume held by another node). The message reaches the user."""

    def release(self, name: str) -> None:  # noqa: B027 - optional hook
        """Called after the last unmount of ``name`` on this host."""

    def before_remove(self, name: str) -> None:  # noqa: B027 - optional hook
        """Called (off the event loop) before the driver deletes ``name``; raise to refuse (for
        example: another host still has it mounted). The message reaches the user."""

    def status(self, name: str) -> Mapping[str, Any]:
        """Extra Status fields for ``name`` (which hosts use it...). Called on every Get: no I/O."""
        return {}

    # -- ownership: which driver's volumes these are --------------------------------------------
    def owner(self) -> Mapping[str, str]:
        """What :meth:`set_owner` recorded (``driver``, ``options``), or empty if nothing was."""
        return {}

    def set_owner(self, owner: Mapping[str, str]) -> None:  # noqa: B027 - optional hook
        """Record which driver (and its option schema) these records belong to (durable)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (connections, leases)."""
