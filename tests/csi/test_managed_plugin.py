"""The managed CSI plugin ``dockvol plugin build --csi`` makes, enabled in a private engine 26:
the engine starts it with its config (CSI socket, propagated /data/published, the ``shared``
bind mount) and its CSI endpoint stages and publishes where Swarm would look for a volume.

Swarm itself is in test_swarm.py.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from dockvol._csi import csi_pb2 as pb
from dockvol._csi import csi_pb2_grpc as pb_grpc
from tests.csi.managed import PLUGIN, build_csi_plugin
from tests.support.engine import BUSYBOX_IMAGE, Engine

pytestmark = pytest.mark.engine

Mode = pb.VolumeCapability.AccessMode.Mode


@pytest.fixture(scope="module")
def engine26() -> Iterator[tuple[Engine, Path, str]]:
    d = Path(tempfile.mkdtemp(prefix="dvcm", dir="/tmp"))
    shared = d / "shared"
    shared.mkdir()
    eng = Engine.start(version="26")
    try:
        plugin_id = build_csi_plugin(eng, shared, DOCKVOL_NODE="node-1")
        yield eng, shared, plugin_id
    finally:
        eng.docker("plugin", "disable", "-f", PLUGIN, check=False)
        eng.stop()
        shutil.rmtree(d, ignore_errors=True)


def in_engine(eng: Engine, *cmd: str) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in the engine's mount namespace (where the plugin's mounts propagate)."""
    return subprocess.run([*eng.enter_args(), *cmd], capture_output=True, text=True, timeout=60)


def test_engine_runs_the_csi_plugin_and_it_publishes_where_swarm_looks(
    engine26: tuple[Engine, Path, str],
) -> None:
    eng, shared, plugin_id = engine26
    config = eng.docker("plugin", "inspect", "-f", "{{json .Config.Interface.Types}}", PLUGIN)
    assert "docker.csinode/1.0" in config.stdout and "docker.csicontroller/1.0" in config.stdout
    # The engine dials the plugin at /run/docker/plugins/<id>/csi.sock; our test engine's
    # /run/docker/plugins is its plugins_dir.
    sock = eng.plugins_dir / plugin_id / "csi.sock"
    with grpc.insecure_channel(f"unix://{sock}") as channel:
        identity = pb_grpc.IdentityStub(channel)
        assert identity.Probe(pb.ProbeRequest(), timeout=30, wait_for_ready=True).ready.value
        assert identity.GetPluginInfo(pb.GetPluginInfoRequest()).name == "dvcsi"
        controller, node = pb_grpc.ControllerStub(channel), pb_grpc.NodeStub(channel)
        cap = pb.VolumeCapability(
            mount=pb.VolumeCapability.MountVolume(),
            access_mode=pb.VolumeCapability.AccessMode(mode=Mode.MULTI_NODE_MULTI_WRITER),
        )
        vol = controller.CreateVolume(
            pb.CreateVolumeRequest(name="v1", volume_capabilities=[cap])
        ).volume
        assert list(vol.accessible_topology) == []  # shared: reachable from every node
        (vol_dir,) = [p for p in shared.iterdir() if not p.name.startswith(".")]
        (vol_dir / "hello").write_text("from the shared filesystem\n")
        # Swarm's paths inside the plugin (swarmkit: /data/staged/<id>, /data/published/<id>).
        staging, target = "/data/staged/v1", "/data/published/v1"
        node.NodeStageVolume(
            pb.NodeStageVolumeRequest(
                volume_id="v1", staging_target_path=staging, volume_capability=cap,
                volume_context=vol.volume_context,
            )
        )  # fmt: skip
        node.NodePublishVolume(
            pb.NodePublishVolumeRequest(
                volume_id="v1", staging_target_path=staging, target_path=target,
                volume_capability=cap,
            )
        )  # fmt: skip
        # /data/published is the propagated mount: the engine finds the volume on its side
        # (where it binds it into a task's container).
        host_path = eng.dir / "data" / "plugins" / plugin_id / "propagated-mount" / "v1"
        seen = in_engine(eng, "cat", str(host_path / "hello"))
        assert seen.returncode == 0, seen.stderr
        assert seen.stdout == "from the shared filesystem\n"
        out = eng.docker(
            "run", "--rm", "--network", "none", "-v", f"{host_path}:/d", BUSYBOX_IMAGE,
            "sh", "-c", "cat /d/hello && echo from-a-container > /d/back",
        )  # fmt: skip
        assert out.stdout == "from the shared filesystem\n"
        assert (vol_dir / "back").read_text() == "from-a-container\n"
        node.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest(volume_id="v1", target_path=target))
        node.NodeUnstageVolume(
            pb.NodeUnstageVolumeRequest(volume_id="v1", staging_target_path=staging)
        )
        assert in_engine(eng, "test", "-e", str(host_path / "hello")).returncode != 0
        controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id="v1"))
        assert not vol_dir.exists()
        # Unknown volumes are NOT_FOUND through the engine's socket too.
        with pytest.raises(grpc.RpcError) as err:
            node.NodePublishVolume(
                pb.NodePublishVolumeRequest(
                    volume_id="nope", staging_target_path=staging, target_path=target,
                    volume_capability=cap,
                )
            )  # fmt: skip
        assert err.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
