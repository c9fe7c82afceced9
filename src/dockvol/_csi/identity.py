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
            caps.append(pb.PluginCapability(volume_expansion=Expansion(type=Expansion.ONLINE)))
        return pb.GetPluginCapabilitiesResponse(capabilities=caps)

    @rpc
    async def Probe(self, request: Any, context: Any) -> pb.ProbeResponse:
        # Ready only once reconcile has compared the records with reality.
        return pb.ProbeResponse(ready=BoolValue(value=self.p.service.health.ready))
