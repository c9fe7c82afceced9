"""What the three CSI services share: the volume service, the driver's access, this node."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .._sdk.options import parse_size
from .._service.locks import KeyedLocks
from .._service.service import VolumeInfo, VolumeService
from . import csi_pb2 as pb
from .access import Access
from .capacity import CapacityRecords
from .secrets import RequestSecrets

#: A key every volume context of ours holds, beside the volume's options: a volume without
#: options still has a context, and a node tells our contexts from anything else.
CONTEXT_MARK = "dockvol/volume"


def options_of(context: Mapping[str, str]) -> dict[str, str] | None:
    """The volume's options from a volume context of ours; ``None`` if it is not one."""
    if CONTEXT_MARK not in context:
        return None
    return {k: v for k, v in context.items() if k != CONTEXT_MARK}


@dataclass
class CsiPlugin:
    service: VolumeService
    #: GetPluginInfo's name (domain-like: the engine's plugin name is fine).
    name: str
    node_id: str
    access: Access
    secrets: RequestSecrets
    #: Capacity ranges asked of drivers without a size (their second CreateVolume checks it).
    capacities: CapacityRecords
    #: Node calls for one volume one at a time: a stage and its publish must not interleave.
    node_locks: KeyedLocks = field(default_factory=KeyedLocks)

    @property
    def has_size(self) -> bool:
        return "size" in self.service.schema

    @property
    def can_resize(self) -> bool:
        from .._sdk.driver import Driver

        return self.has_size and type(self.service.driver).resize is not Driver.resize

    def capacity(self, info: VolumeInfo) -> int:
        """The volume's size in bytes, 0 (unknown) when the driver has no size."""
        if not self.has_size:
            return 0
        raw = info.options.get("size")
        if raw is not None:
            return parse_size(raw)
        default = self.service.schema["size"].default
        return int(default) if isinstance(default, int) else 0

    def volume(self, info: VolumeInfo) -> pb.Volume:
        """A volume as CSI shows it. Its context carries its options: a node that does not
        know the volume yet registers it from them (NodeStage)."""
        return pb.Volume(
            volume_id=info.name,
            capacity_bytes=self.capacity(info),
            volume_context={**info.options, CONTEXT_MARK: "1"},
            accessible_topology=self.access.topology(),
        )
