"""Identity and capabilities of the local driver as a CSI plugin."""

from __future__ import annotations

from dockvol._csi import csi_pb2 as pb
from tests.csi.conftest import NODE, CsiProcess


def test_plugin_info_and_probe(csi_plugin: CsiProcess) -> None:
    info = csi_plugin.identity.GetPluginInfo(pb.GetPluginInfoRequest())
    assert info.name == "dockvol.test"
    assert info.vendor_version
    assert csi_plugin.identity.Probe(pb.ProbeRequest()).ready.value is True


def test_local_driver_is_single_node_with_topology(csi_plugin: CsiProcess) -> None:
    caps = csi_plugin.identity.GetPluginCapabilities(pb.GetPluginCapabilitiesRequest())
    services = {c.service.type for c in caps.capabilities if c.HasField("service")}
    Service = pb.PluginCapability.Service
    assert services == {Service.CONTROLLER_SERVICE, Service.VOLUME_ACCESSIBILITY_CONSTRAINTS}
    info = csi_plugin.node.NodeGetInfo(pb.NodeGetInfoRequest())
    assert info.node_id == NODE
    assert dict(info.accessible_topology.segments) == {"dockvol/node": NODE}
