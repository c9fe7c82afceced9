"""CSI access modes and topology, from what the driver declares (``Driver.sharing``).

A ``single-node`` driver's volume is used by one node at a time; a ``multi-node`` driver's by
every node at once. Where a volume is reachable: a single-node driver on a host-local root
only on the node that created it (its topology names that node); a multi-node driver, or any
driver whose root every node shares, on every node (no topology).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .._sdk.driver import Driver
from . import csi_pb2 as pb
from .errors import invalid

Mode = pb.VolumeCapability.AccessMode.Mode
SINGLE_NODE_MODES = frozenset(
    {
        Mode.SINGLE_NODE_WRITER,
        Mode.SINGLE_NODE_READER_ONLY,
        Mode.SINGLE_NODE_SINGLE_WRITER,
        Mode.SINGLE_NODE_MULTI_WRITER,
    }
)
MULTI_NODE_MODES = frozenset(
    {Mode.MULTI_NODE_READER_ONLY, Mode.MULTI_NODE_SINGLE_WRITER, Mode.MULTI_NODE_MULTI_WRITER}
)
READ_ONLY_MODES = frozenset({Mode.SINGLE_NODE_READER_ONLY, Mode.MULTI_NODE_READER_ONLY})
#: The topology segment naming a node: ``{TOPOLOGY_KEY: node_id}``.
TOPOLOGY_KEY = "dockvol/node"


class Access:
    def __init__(self, driver: Driver, node_id: str) -> None:
        self.multi_node = type(driver).sharing == "multi-node"
        self.everywhere = self.multi_node or driver.context.shared_root
        self.node_id = node_id
        self._fs_choices = _fs_choices(driver)

    def problem(
        self, cap: pb.VolumeCapability, options: Mapping[str, str] | None = None
    ) -> str | None:
        """Why this driver (and volume, given its options) cannot honour ``cap``; ``None`` if it can."""
        if cap.WhichOneof("access_type") == "block":
            return "raw block access is not offered; use access type mount"
        if cap.WhichOneof("access_type") != "mount":
            return "the volume capability has no access type; use mount"
        if cap.mount.mount_flags:
            return (
                f"mount flags ({', '.join(cap.mount.mount_flags)}) are not accepted; "
                "use the driver's options (parameters) instead"
            )
        fs_type = cap.mount.fs_type
        if fs_type and self._fs_choices is not None and fs_type not in self._fs_choices:
            return f"fs_type {fs_type!r} is not offered; use one of {', '.join(self._fs_choices)}"
        mode = cap.access_mode.mode
        if mode in SINGLE_NODE_MODES:
            return None
        if mode in MULTI_NODE_MODES:
            if not self.multi_node:
                return (
                    f"access mode {Mode.Name(mode)} needs a volume several nodes use at once; "
                    "this driver's volumes are single-node (use a SINGLE_NODE_* mode, "
                    "Swarm: --scope single)"
                )
            if options is not None and options.get("access") == "single-node":
                return (
                    f"access mode {Mode.Name(mode)} needs several nodes; this volume was "
                    "created with access=single-node"
                )
            return None
        return "the volume capability has no access mode; set one (e.g. SINGLE_NODE_WRITER)"

    def check(
        self, caps: Iterable[pb.VolumeCapability], options: Mapping[str, str] | None = None
    ) -> None:
        """Refuse (INVALID_ARGUMENT) unless every capability is honoured."""
        caps = list(caps)
        if not caps:
            raise invalid("volume_capabilities are required")
        for cap in caps:
            why = self.problem(cap, options)
            if why is not None:
                raise invalid(why)

    def fs_type(self, caps: Iterable[pb.VolumeCapability]) -> str:
        """The filesystem the capabilities ask for ("" for none)."""
        for cap in caps:
            if cap.WhichOneof("access_type") == "mount" and cap.mount.fs_type:
                return cap.mount.fs_type
        return ""

    def topology(self) -> list[pb.Topology]:
        """Where a volume created here is reachable: nowhere in particular (everywhere), or
        only this node."""
        if self.everywhere:
            return []
        return [pb.Topology(segments={TOPOLOGY_KEY: self.node_id})]

    def reachable_from(self, requirement: pb.TopologyRequirement) -> bool:
        """Can a volume created here satisfy the orchestrator's requisite topology?"""
        if self.everywhere or not requirement.requisite:
            return True
        return any(t.segments.get(TOPOLOGY_KEY) == self.node_id for t in requirement.requisite)


def _fs_choices(driver: Driver) -> tuple[str, ...] | None:
    opt = type(driver).options.get("fs")
    return opt.choices if opt is not None else None
