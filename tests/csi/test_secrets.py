"""CSI secrets reach the driver through its secret references and are never stored: an
encrypted block volume whose passphrase comes only in the requests' ``secrets`` maps."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from dockvol._csi import csi_pb2 as pb
from dockvol._csi import csi_pb2_grpc as pb_grpc
from tests.csi.conftest import mounts_at
from tests.csi.test_controller import cap
from tests.support.plugin import Plugin

PASSPHRASE = "correct horse battery staple 7f3a"
PARAMS = {"size": "64M", "encrypt": "true", "passphrase": "secret:pp"}


def _files_containing(base: Path, needle: bytes) -> list[Path]:
    found = []
    for root, _, files in os.walk(base):
        for f in files:
            p = Path(root, f)
            try:
                if p.is_file() and not p.is_socket() and needle in p.read_bytes():
                    found.append(p)
            except OSError:
                pass
    return found


def test_passphrase_only_from_the_request_and_never_stored(
    block_csi: tuple[Plugin, grpc.Channel], csi_dirs: Path
) -> None:
    _, channel = block_csi
    controller, node = pb_grpc.ControllerStub(channel), pb_grpc.NodeStub(channel)
    # Without the secret the driver cannot create the encrypted volume, and says which one.
    with pytest.raises(grpc.RpcError) as err:
        controller.CreateVolume(
            pb.CreateVolumeRequest(name="enc", volume_capabilities=[cap()], parameters=PARAMS)
        )
    assert "'pp'" in err.value.details()  # type: ignore[attr-defined]
    assert PASSPHRASE not in err.value.details()  # type: ignore[attr-defined]
    vol = controller.CreateVolume(
        pb.CreateVolumeRequest(
            name="enc", volume_capabilities=[cap()], parameters=PARAMS,
            secrets={"pp": PASSPHRASE},
        )
    ).volume  # fmt: skip
    assert vol.capacity_bytes == 64 << 20
    assert dict(vol.volume_context)["passphrase"] == "secret:pp"  # the reference, not the value
    staging, target = csi_dirs / "node" / "stg", csi_dirs / "node" / "tgt"
    staging.mkdir()
    node.NodeStageVolume(
        pb.NodeStageVolumeRequest(
            volume_id="enc", staging_target_path=str(staging), volume_capability=cap(),
            secrets={"pp": PASSPHRASE},
        )
    )  # fmt: skip
    node.NodePublishVolume(
        pb.NodePublishVolumeRequest(
            volume_id="enc", staging_target_path=str(staging), target_path=str(target),
            volume_capability=cap(),
        )
    )  # fmt: skip
    (target / "data").write_text("secret data")
    assert mounts_at(target) == 1
    node.NodeUnpublishVolume(
        pb.NodeUnpublishVolumeRequest(volume_id="enc", target_path=str(target))
    )
    node.NodeUnstageVolume(
        pb.NodeUnstageVolumeRequest(volume_id="enc", staging_target_path=str(staging))
    )
    # Nothing the plugin wrote (registry, images, logs) holds the passphrase.
    assert _files_containing(csi_dirs, PASSPHRASE.encode()) == []
    controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id="enc"))
