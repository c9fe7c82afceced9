"""CSI Controller calls through gRPC on a unix socket, with the real local driver."""

from __future__ import annotations

import grpc
import pytest

from dockvol._csi import csi_pb2 as pb
from tests.csi.conftest import NODE, CsiProcess

Mode = pb.VolumeCapability.AccessMode.Mode


def cap(mode: int = Mode.SINGLE_NODE_WRITER) -> pb.VolumeCapability:
    return pb.VolumeCapability(
        mount=pb.VolumeCapability.MountVolume(),
        access_mode=pb.VolumeCapability.AccessMode(mode=mode),
    )


def create(plugin: CsiProcess, name: str, **params: str) -> pb.CreateVolumeResponse:
    return plugin.controller.CreateVolume(
        pb.CreateVolumeRequest(name=name, volume_capabilities=[cap()], parameters=params)
    )


def volume_dirs(plugin: CsiProcess) -> list[str]:
    """The volumes' directories under the root (the driver's own dot-entries left out)."""
    return sorted(p.name for p in plugin.root.iterdir() if not p.name.startswith("."))


def code_of(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    err = info.value
    return err.code(), err.details()  # type: ignore[attr-defined]


def test_create_returns_options_in_context_and_topology(csi_plugin: CsiProcess) -> None:
    vol = create(csi_plugin, "v1", mode="0750").volume
    assert vol.volume_id == "v1"
    assert dict(vol.volume_context) == {"mode": "0750", "dockvol/volume": "1"}
    assert [dict(t.segments) for t in vol.accessible_topology] == [{"dockvol/node": NODE}]
    assert len(volume_dirs(csi_plugin)) == 1  # the driver made its directory


def test_create_again_is_idempotent(csi_plugin: CsiProcess) -> None:
    first = create(csi_plugin, "v1", mode="0750").volume
    again = create(csi_plugin, "v1", mode="0750").volume
    assert again == first


def test_create_with_other_parameters_is_already_exists(csi_plugin: CsiProcess) -> None:
    create(csi_plugin, "v1", mode="0750")
    code, msg = code_of(lambda: create(csi_plugin, "v1", mode="0700"))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert "mode" in msg


def test_unknown_parameter_is_refused_with_the_valid_list(csi_plugin: CsiProcess) -> None:
    code, msg = code_of(lambda: create(csi_plugin, "v1", colour="blue"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'colour'" in msg
    for valid in ("gid", "mode", "on_remove", "uid"):
        assert valid in msg
    assert csi_plugin.controller.ListVolumes(pb.ListVolumesRequest()).entries == []


def test_multi_node_mode_is_refused_by_a_single_node_driver(csi_plugin: CsiProcess) -> None:
    req = pb.CreateVolumeRequest(name="v1", volume_capabilities=[cap(Mode.MULTI_NODE_MULTI_WRITER)])
    code, msg = code_of(lambda: csi_plugin.controller.CreateVolume(req))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "single-node" in msg


def test_missing_name_and_capabilities_are_invalid(csi_plugin: CsiProcess) -> None:
    c = csi_plugin.controller
    code, _ = code_of(lambda: c.CreateVolume(pb.CreateVolumeRequest(volume_capabilities=[cap()])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = code_of(lambda: c.CreateVolume(pb.CreateVolumeRequest(name="v1")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_delete_is_idempotent_and_removes_the_directory(csi_plugin: CsiProcess) -> None:
    create(csi_plugin, "v1")
    assert volume_dirs(csi_plugin)
    c = csi_plugin.controller
    c.DeleteVolume(pb.DeleteVolumeRequest(volume_id="v1"))
    c.DeleteVolume(pb.DeleteVolumeRequest(volume_id="v1"))
    assert volume_dirs(csi_plugin) == []


def test_validate_and_not_found(csi_plugin: CsiProcess) -> None:
    create(csi_plugin, "v1")
    c = csi_plugin.controller
    ok = c.ValidateVolumeCapabilities(
        pb.ValidateVolumeCapabilitiesRequest(volume_id="v1", volume_capabilities=[cap()])
    )
    assert ok.HasField("confirmed")
    no = c.ValidateVolumeCapabilities(
        pb.ValidateVolumeCapabilitiesRequest(
            volume_id="v1", volume_capabilities=[cap(Mode.MULTI_NODE_READER_ONLY)]
        )
    )
    assert not no.HasField("confirmed") and no.message
    req = pb.ValidateVolumeCapabilitiesRequest(volume_id="nope", volume_capabilities=[cap()])
    code, _ = code_of(lambda: c.ValidateVolumeCapabilities(req))
    assert code == grpc.StatusCode.NOT_FOUND


def test_list_pages_through_every_volume(csi_plugin: CsiProcess) -> None:
    for i in range(5):
        create(csi_plugin, f"v{i}")
    c = csi_plugin.controller
    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = c.ListVolumes(pb.ListVolumesRequest(max_entries=2, starting_token=token))
        assert len(page.entries) <= 2
        seen += [e.volume.volume_id for e in page.entries]
        token = page.next_token
        if not token:
            break
    assert seen == [f"v{i}" for i in range(5)]
    code, _ = code_of(lambda: c.ListVolumes(pb.ListVolumesRequest(starting_token="zz")))
    assert code == grpc.StatusCode.ABORTED


def test_list_survives_deleting_the_last_volume_of_a_page(csi_plugin: CsiProcess) -> None:
    for i in range(4):
        create(csi_plugin, f"v{i}")
    c = csi_plugin.controller
    first = c.ListVolumes(pb.ListVolumesRequest(max_entries=2))
    assert [e.volume.volume_id for e in first.entries] == ["v0", "v1"]
    c.DeleteVolume(pb.DeleteVolumeRequest(volume_id="v1"))
    create(csi_plugin, "v0a")  # sorts before the token: already "seen", not repeated
    rest = c.ListVolumes(pb.ListVolumesRequest(starting_token=first.next_token))
    assert [e.volume.volume_id for e in rest.entries] == ["v2", "v3"]
    assert rest.next_token == ""


def test_capacity_without_a_size_option_is_accepted_and_unknown(csi_plugin: CsiProcess) -> None:
    req = pb.CreateVolumeRequest(
        name="v1",
        volume_capabilities=[cap()],
        capacity_range=pb.CapacityRange(required_bytes=1 << 20),
    )
    assert csi_plugin.controller.CreateVolume(req).volume.capacity_bytes == 0
    capacity = csi_plugin.controller.GetCapacity(pb.GetCapacityRequest(volume_capabilities=[cap()]))
    assert capacity.available_capacity > 0


def test_capabilities(csi_plugin: CsiProcess) -> None:
    RPC = pb.ControllerServiceCapability.RPC
    caps = csi_plugin.controller.ControllerGetCapabilities(pb.ControllerGetCapabilitiesRequest())
    assert {c.rpc.type for c in caps.capabilities} == {
        RPC.CREATE_DELETE_VOLUME,
        RPC.LIST_VOLUMES,
        RPC.GET_CAPACITY,
    }
    req = pb.ControllerExpandVolumeRequest(
        volume_id="v1", capacity_range=pb.CapacityRange(required_bytes=1)
    )
    code, _ = code_of(lambda: csi_plugin.controller.ControllerExpandVolume(req))
    assert code == grpc.StatusCode.UNIMPLEMENTED


def test_sizeless_volume_remembers_its_capacity_range(csi_plugin: CsiProcess) -> None:
    def req(required: int) -> pb.CreateVolumeRequest:
        return pb.CreateVolumeRequest(
            name="v1",
            volume_capabilities=[cap()],
            capacity_range=pb.CapacityRange(required_bytes=required),
        )

    c = csi_plugin.controller
    c.CreateVolume(req(1 << 20))
    c.CreateVolume(req(1 << 20))
    code, _ = code_of(lambda: c.CreateVolume(req(2 << 20)))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    csi_plugin.kill()  # the record is durable: a restarted plugin still refuses
    csi_plugin.start()
    code, _ = code_of(lambda: csi_plugin.controller.CreateVolume(req(2 << 20)))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    csi_plugin.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id="v1"))
    csi_plugin.controller.CreateVolume(req(2 << 20))  # deleted: the name is free again


def test_the_name_of_the_managed_plugins_own_directory_is_refused(csi_plugin: CsiProcess) -> None:
    req = pb.CreateVolumeRequest(name=".dockvol", volume_capabilities=[cap()])
    code, message = code_of(lambda: csi_plugin.controller.CreateVolume(req))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "reserved" in message
