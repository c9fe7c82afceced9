"""``dockvol serve --csi-endpoint``: CSI beside the Docker socket, over one volume service."""

from __future__ import annotations

from pathlib import Path

import grpc

from dockvol._csi import csi_pb2 as pb
from dockvol._csi import csi_pb2_grpc as pb_grpc
from tests.csi.test_controller import cap
from tests.support.plugin import Plugin


def test_serve_speaks_csi_and_docker_over_one_service(csi_dirs: Path) -> None:
    csi_sock = csi_dirs / "csi.sock"
    plugin = Plugin.start(
        csi_dirs / "p.sock", csi_dirs / "root", csi_dirs / "state",
        "--csi-endpoint", f"unix://{csi_sock}", name="dockvol-csi",
    )  # fmt: skip
    try:
        with grpc.insecure_channel(f"unix://{csi_sock}") as channel:
            identity = pb_grpc.IdentityStub(channel)
            assert identity.Probe(pb.ProbeRequest(), timeout=10).ready.value
            assert identity.GetPluginInfo(pb.GetPluginInfoRequest()).name == "dockvol-csi"
            pb_grpc.ControllerStub(channel).CreateVolume(
                pb.CreateVolumeRequest(name="both", volume_capabilities=[cap()])
            )
        # The Docker front end sees the volume the CSI one created: one service, one registry.
        status, reply = plugin.call("VolumeDriver.Get", {"Name": "both"})
        assert status == 200 and reply["Volume"]["Name"] == "both"
    finally:
        assert plugin.stop() == 0
    assert not csi_sock.exists()  # removed at stop


def test_bad_endpoint_is_refused_at_start(csi_dirs: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "dockvol", "serve", "--socket", str(csi_dirs / "p.sock"),
         "--root", str(csi_dirs / "root"), "--state", str(csi_dirs / "state"),
         "--csi-endpoint", "tcp://127.0.0.1:9000"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    assert "only unix sockets" in out.stderr
    assert "Traceback" not in out.stderr
