"""The block driver over CSI: capacity ranges become its size option, expansion grows it."""

from __future__ import annotations

import grpc

from dockvol._csi import csi_pb2 as pb
from dockvol._csi import csi_pb2_grpc as pb_grpc
from dockvol._csi.identity import CAP_SYS_RESOURCE, has_capability
from tests.csi.test_controller import cap, code_of
from tests.support.plugin import Plugin

MiB = 1 << 20


def test_capacity_range_is_the_size_and_expansion_grows_it(
    block_csi: tuple[Plugin, grpc.Channel],
) -> None:
    _, channel = block_csi
    c = pb_grpc.ControllerStub(channel)
    req = pb.CreateVolumeRequest(
        name="b1", volume_capabilities=[cap()],
        capacity_range=pb.CapacityRange(required_bytes=32 * MiB, limit_bytes=64 * MiB),
    )  # fmt: skip
    vol = c.CreateVolume(req).volume
    assert vol.capacity_bytes == 32 * MiB
    assert dict(vol.volume_context)["size"] == str(32 * MiB)
    assert c.CreateVolume(req).volume == vol  # the same request again: the same volume
    other = pb.CreateVolumeRequest(
        name="b1", volume_capabilities=[cap()],
        capacity_range=pb.CapacityRange(required_bytes=48 * MiB),
    )  # fmt: skip
    code, _ = code_of(lambda: c.CreateVolume(other))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    grow = pb.ControllerExpandVolumeRequest(
        volume_id="b1", capacity_range=pb.CapacityRange(required_bytes=64 * MiB)
    )
    assert c.ControllerExpandVolume(grow).capacity_bytes == 64 * MiB
    assert c.ControllerExpandVolume(grow).capacity_bytes == 64 * MiB  # a retry
    (listed,) = c.ListVolumes(pb.ListVolumesRequest()).entries
    assert listed.volume.capacity_bytes == 64 * MiB
    caps = c.ControllerGetCapabilities(pb.ControllerGetCapabilitiesRequest()).capabilities
    assert pb.ControllerServiceCapability.RPC.EXPAND_VOLUME in {x.rpc.type for x in caps}
    c.DeleteVolume(pb.DeleteVolumeRequest(volume_id="b1"))


def test_a_size_outside_the_range_is_out_of_range(block_csi: tuple[Plugin, grpc.Channel]) -> None:
    _, channel = block_csi
    req = pb.CreateVolumeRequest(
        name="b2", volume_capabilities=[cap()], parameters={"size": "16M"},
        capacity_range=pb.CapacityRange(required_bytes=32 * MiB),
    )  # fmt: skip
    code, msg = code_of(lambda: pb_grpc.ControllerStub(channel).CreateVolume(req))
    assert code == grpc.StatusCode.OUT_OF_RANGE
    assert "size=16M" in msg
    assert pb_grpc.ControllerStub(channel).ListVolumes(pb.ListVolumesRequest()).entries == []


def test_expansion_is_online_only_when_a_mounted_filesystem_can_grow(
    block_csi: tuple[Plugin, grpc.Channel],
) -> None:
    """Growing a mounted ext4 needs CAP_SYS_RESOURCE: a plugin without it says OFFLINE (the
    orchestrator unpublishes first) rather than promise ONLINE and fail."""
    _, channel = block_csi
    caps = pb_grpc.IdentityStub(channel).GetPluginCapabilities(pb.GetPluginCapabilitiesRequest())
    (kind,) = [c.volume_expansion.type for c in caps.capabilities if c.HasField("volume_expansion")]
    Expansion = pb.PluginCapability.VolumeExpansion
    # The plugin runs as this test's user, with the same capabilities.
    expected = Expansion.ONLINE if has_capability(CAP_SYS_RESOURCE) else Expansion.OFFLINE
    assert kind == expected
