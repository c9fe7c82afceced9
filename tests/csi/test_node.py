"""CSI Node calls with real bind mounts: stage, publish (read-write and read-only), unpublish,
unstage, their retries, and a kill -9 in the middle of a stage."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import grpc
import pytest

from dockvol._csi import csi_pb2 as pb
from tests.csi.conftest import CsiProcess, mounts_at
from tests.csi.test_controller import cap, code_of, create

Mode = pb.VolumeCapability.AccessMode.Mode


def stage(plugin: CsiProcess, vol: str, staging: Path, **context: str) -> None:
    plugin.node.NodeStageVolume(
        pb.NodeStageVolumeRequest(
            volume_id=vol,
            staging_target_path=str(staging),
            volume_capability=cap(),
            volume_context=context,
        )
    )


def publish(
    plugin: CsiProcess, vol: str, staging: Path, target: Path, readonly: bool = False
) -> None:
    plugin.node.NodePublishVolume(
        pb.NodePublishVolumeRequest(
            volume_id=vol,
            staging_target_path=str(staging),
            target_path=str(target),
            volume_capability=cap(),
            readonly=readonly,
        )
    )


def unpublish(plugin: CsiProcess, vol: str, target: Path) -> None:
    plugin.node.NodeUnpublishVolume(
        pb.NodeUnpublishVolumeRequest(volume_id=vol, target_path=str(target))
    )


def unstage(plugin: CsiProcess, vol: str, staging: Path) -> None:
    plugin.node.NodeUnstageVolume(
        pb.NodeUnstageVolumeRequest(volume_id=vol, staging_target_path=str(staging))
    )


def paths(plugin: CsiProcess) -> tuple[Path, Path]:
    staging = plugin.root.parent / "node" / "staging"
    staging.mkdir(exist_ok=True)
    return staging, plugin.root.parent / "node" / "target"


def test_stage_publish_unpublish_unstage(csi_plugin: CsiProcess) -> None:
    create(csi_plugin, "v1")
    staging, target = paths(csi_plugin)
    stage(csi_plugin, "v1", staging)
    stage(csi_plugin, "v1", staging)  # a retry changes nothing
    assert mounts_at(staging) == 1
    publish(csi_plugin, "v1", staging, target)
    publish(csi_plugin, "v1", staging, target)
    assert mounts_at(target) == 1
    (target / "data").write_text("hello")
    # The same directory the driver made, seen through both binds.
    (vol_dir,) = [p for p in csi_plugin.root.iterdir() if not p.name.startswith(".")]
    assert (vol_dir / "data").read_text() == "hello"
    assert (staging / "data").read_text() == "hello"
    # Staged and published: the volume is in use, DeleteVolume refuses.
    code, _ = code_of(
        lambda: csi_plugin.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id="v1"))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    unpublish(csi_plugin, "v1", target)
    unpublish(csi_plugin, "v1", target)
    assert not target.exists()  # the plugin removes the target path it made
    unstage(csi_plugin, "v1", staging)
    unstage(csi_plugin, "v1", staging)
    assert mounts_at(staging) == 0
    assert (vol_dir / "data").read_text() == "hello"  # unmounting never touches the data
    csi_plugin.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id="v1"))
    assert not vol_dir.exists()


def test_publish_without_staging(csi_plugin: CsiProcess) -> None:
    """The plugin does not offer staging (Swarm never unstages): publish mounts and binds."""
    caps = csi_plugin.node.NodeGetCapabilities(pb.NodeGetCapabilitiesRequest()).capabilities
    assert pb.NodeServiceCapability.RPC.STAGE_UNSTAGE_VOLUME not in {c.rpc.type for c in caps}
    create(csi_plugin, "v1")
    _, target = paths(csi_plugin)
    req = pb.NodePublishVolumeRequest(
        volume_id="v1", target_path=str(target), volume_capability=cap()
    )
    csi_plugin.node.NodePublishVolume(req)
    csi_plugin.node.NodePublishVolume(req)  # a retry: still one mount, one record
    assert mounts_at(target) == 1
    (target / "f").write_text("x")
    code, _ = code_of(
        lambda: csi_plugin.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id="v1"))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION  # published: in use
    unpublish(csi_plugin, "v1", target)
    assert mounts_at(target) == 0 and not target.exists()
    csi_plugin.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id="v1"))


def test_publish_registers_a_volume_from_its_context(csi_plugin: CsiProcess) -> None:
    """Swarm without staging: the first call a node sees for a volume is NodePublish."""
    _, target = paths(csi_plugin)
    context = {"mode": "0700", "dockvol/volume": "1"}
    csi_plugin.node.NodePublishVolume(
        pb.NodePublishVolumeRequest(
            volume_id="elsewhere", target_path=str(target), volume_capability=cap(),
            volume_context=context,
        )
    )  # fmt: skip
    assert os.stat(target).st_mode & 0o777 == 0o700
    unpublish(csi_plugin, "elsewhere", target)


def test_read_only_publish(csi_plugin: CsiProcess) -> None:
    create(csi_plugin, "v1")
    staging, target = paths(csi_plugin)
    stage(csi_plugin, "v1", staging)
    publish(csi_plugin, "v1", staging, target, readonly=True)
    with pytest.raises(OSError) as err:
        (target / "x").write_text("no")
    assert err.value.errno == errno.EROFS
    (staging / "y").write_text("staging stays writable")
    assert (target / "y").exists()
    # The same target read-write while it is published read-only: incompatible.
    code, _ = code_of(lambda: publish(csi_plugin, "v1", staging, target, readonly=False))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    unpublish(csi_plugin, "v1", target)
    unstage(csi_plugin, "v1", staging)


def test_publish_before_stage_is_refused(csi_plugin: CsiProcess) -> None:
    create(csi_plugin, "v1")
    staging, target = paths(csi_plugin)
    code, msg = code_of(lambda: publish(csi_plugin, "v1", staging, target))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "NodeStageVolume" in msg
    assert mounts_at(target) == 0


def test_unknown_volume_is_not_found(csi_plugin: CsiProcess) -> None:
    staging, target = paths(csi_plugin)
    code, _ = code_of(lambda: stage(csi_plugin, "nope", staging))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = code_of(lambda: publish(csi_plugin, "nope", staging, target))
    assert code == grpc.StatusCode.NOT_FOUND
    req = pb.NodeGetVolumeStatsRequest(volume_id="nope", volume_path=str(target))
    code, _ = code_of(lambda: csi_plugin.node.NodeGetVolumeStats(req))
    assert code == grpc.StatusCode.NOT_FOUND


def test_stage_registers_a_volume_from_its_context(csi_plugin: CsiProcess) -> None:
    """Swarm: the controller created the volume on another node; this node learns it from the
    volume context of NodeStage."""
    staging, _ = paths(csi_plugin)
    context = {"mode": "0700", "dockvol/volume": "1"}
    stage(csi_plugin, "elsewhere", staging, **context)
    listed = csi_plugin.controller.ListVolumes(pb.ListVolumesRequest()).entries
    assert [(e.volume.volume_id, dict(e.volume.volume_context)) for e in listed] == [
        ("elsewhere", context)
    ]
    assert os.stat(staging).st_mode & 0o777 == 0o700
    unstage(csi_plugin, "elsewhere", staging)


def test_a_context_that_is_not_ours_registers_nothing(csi_plugin: CsiProcess) -> None:
    staging, _ = paths(csi_plugin)
    code, _ = code_of(lambda: stage(csi_plugin, "foreign", staging, mode="0700"))
    assert code == grpc.StatusCode.NOT_FOUND
    assert csi_plugin.controller.ListVolumes(pb.ListVolumesRequest()).entries == []


def test_volume_stats(csi_plugin: CsiProcess) -> None:
    create(csi_plugin, "v1")
    staging, target = paths(csi_plugin)
    stage(csi_plugin, "v1", staging)
    publish(csi_plugin, "v1", staging, target)
    stats = csi_plugin.node.NodeGetVolumeStats(
        pb.NodeGetVolumeStatsRequest(volume_id="v1", volume_path=str(target))
    )
    units = {u.unit: u for u in stats.usage}
    assert units[pb.VolumeUsage.BYTES].total > 0
    assert units[pb.VolumeUsage.INODES].total > 0
    unpublish(csi_plugin, "v1", target)
    unstage(csi_plugin, "v1", staging)


def _wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


@pytest.mark.parametrize("where", ["in-mount", "in-bind"])
def test_kill_during_stage_then_restart(csi_dirs: Path, where: str) -> None:
    """kill -9 inside the driver's mount, or after the record before the bind: after a restart
    the retried stage finishes, the volume is mounted exactly once, and nothing is lost."""
    gate = csi_dirs / "gate"
    gate.mkdir()
    plugin = CsiProcess(
        csi_dirs / "root", csi_dirs / "state", csi_dirs / "csi.sock", csi_dirs / "plugin.log",
        env={"CSI_TEST_GATE": str(gate), "CSI_TEST_GATE_AT": where},
    )  # fmt: skip
    plugin.start()
    try:
        create(plugin, "v1")
        (vol_dir,) = [p for p in plugin.root.iterdir() if not p.name.startswith(".")]
        (vol_dir / "kept").write_text("data")
        staging, target = paths(plugin)
        call = plugin.node.NodeStageVolume.future(
            pb.NodeStageVolumeRequest(
                volume_id="v1", staging_target_path=str(staging), volume_capability=cap()
            )
        )
        _wait_for(gate / where)
        plugin.kill()
        with pytest.raises(grpc.RpcError):
            call.result(timeout=10)
        assert mounts_at(staging) == 0
        plugin.env = {}
        plugin.start()
        # in-bind: the record was durable, so the restart bound it already.
        assert mounts_at(staging) == (1 if where == "in-bind" else 0)
        stage(plugin, "v1", staging)
        assert mounts_at(staging) == 1
        assert (staging / "kept").read_text() == "data"
        publish(plugin, "v1", staging, target)
        assert (target / "kept").read_text() == "data"
        unpublish(plugin, "v1", target)
        unstage(plugin, "v1", staging)
        assert mounts_at(staging) == 0
        plugin.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id="v1"))
    finally:
        plugin.stop()
