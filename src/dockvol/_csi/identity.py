"""CSI Identity: who the plugin is, what it offers, and whether it is ready."""

from __future__ import annotations

from typing import Any

from google.protobuf.wrappers_pb2 import BoolValue

from .. import __version__
from . import csi_pb2 as pb
from . import csi_pb2_grpc as pb_grpc
from .errors import rpc
from .plugin import CsiPlugin

Service = pb.PluginCapability.Service
Expansion = pb.PluginCapability.VolumeExpansion


class Identity(pb_grpc.IdentityServicer):
    def __init__(self, plugin: CsiPlugin) -> None:
        self.p = plugin

    @rpc
    async def GetPluginInfo(self, request: Any, context: Any) -> pb.GetPluginInfoResponse:
        driver = type(self.p.service.driver).__name__
        return pb.GetPluginInfoResponse(
            name=self.p.name, vendor_version=__version__, manifest={"driver": driver}
        )

    @rpc
    async def GetPluginCapabilities(
        self, request: Any, context: Any
    ) -> pb.GetPluginCapabilitiesResponse:
        caps = [pb.PluginCapability(service=Service(type=Service.CONTROLLER_SERVICE))]
        if not self.p.access.everywhere:
            caps.append(
                pb.PluginCapability(service=Service(type=Service.VOLUME_ACCESSIBILITY_CONSTRAINTS))
            )
        if self.p.can_resize:
            # Growing a mounted ext4 needs CAP_SYS_RESOURCE; without it a volume in use cannot
            # grow, and the spec then asks for OFFLINE (unpublish first), not a failing ONLINE.
            kind = Expansion.ONLINE if has_capability(CAP_SYS_RESOURCE) else Expansion.OFFLINE
            caps.append(pb.PluginCapability(volume_expansion=Expansion(type=kind)))
        return pb.GetPluginCapabilitiesResponse(capabilities=caps)

    @rpc
    async def Probe(self, request: Any, context: Any) -> pb.ProbeResponse:
        # Ready only once reconcile has compared the records with reality.
        return pb.ProbeResponse(ready=BoolValue(value=self.p.service.health.ready))


CAP_SYS_RESOURCE = 24


def has_capability(bit: int) -> bool:
    """Whether this process holds a capability (its effective set, from /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except OSError:
        pass
    return False
