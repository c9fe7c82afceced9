"""CSI call latencies beside the Docker front end's, for the same driver in the same process.

One ``dockvol serve --driver local --csi-endpoint ...``: CreateVolume (gRPC) against Create
(the Docker socket), and NodeStageVolume + NodePublishVolume (two calls, real bind mounts)
against Mount, and NodePublish alone (Swarm's path: the plugin offers no staging); each measured
on its own volumes, one call at a time, from one client.
Run it: ``python -m bench.csi_bench [--n N]`` (root: publishing bind-mounts).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from . import common, stats
from .rawclient import Connection, body_of, request, timed

MOUNT_ID = "{:064x}"


def _check(resp: bytes) -> None:
    if not resp.startswith(b"HTTP/1.1 200") or b'"Err"' in body_of(resp):
        raise RuntimeError(f"unexpected reply: {resp[:300]!r}")


def run(n: int = 200) -> dict[str, Any]:
    import grpc

    from dockvol._csi import csi_pb2 as pb
    from dockvol._csi import csi_pb2_grpc as pb_grpc

    base = common.tmpdir("dvcsib")
    csi_sock = base / "csi.sock"
    plugin = common.start_plugin(base / "p.sock", base, "--csi-endpoint", f"unix://{csi_sock}")
    try:
        channel = grpc.insecure_channel(f"unix://{csi_sock}")
        identity = pb_grpc.IdentityStub(channel)
        deadline = time.monotonic() + 30
        while not identity.Probe(pb.ProbeRequest(), timeout=5, wait_for_ready=True).ready.value:
            if time.monotonic() > deadline:
                raise RuntimeError("the CSI endpoint never became ready")
            time.sleep(0.05)  # polling readiness, not timing
        controller, node = pb_grpc.ControllerStub(channel), pb_grpc.NodeStub(channel)
        cap = pb.VolumeCapability(
            mount=pb.VolumeCapability.MountVolume(),
            access_mode=pb.VolumeCapability.AccessMode(mode=1),
        )
        clock = time.perf_counter

        # Docker front end: Create, then Mount of each volume (first mount: the driver mounts).
        conn = Connection(str(plugin.sock))
        create = timed(conn, [request("VolumeDriver.Create", {"Name": f"d{i}"}) for i in range(n)])
        mounts = [
            request("VolumeDriver.Mount", {"Name": f"d{i}", "ID": MOUNT_ID.format(i)})
            for i in range(n)
        ]
        for r in (conn.roundtrip(m) for m in mounts[:1]):
            _check(r)
        mount = timed(conn, mounts[1:])
        for i in range(n):
            _check(
                conn.roundtrip(
                    request("VolumeDriver.Unmount", {"Name": f"d{i}", "ID": MOUNT_ID.format(i)})
                )
            )
        conn.close()

        # CSI: CreateVolume, then NodeStage + NodePublish of each volume.
        csi_create: list[float] = []
        for i in range(n):
            t0 = clock()
            controller.CreateVolume(pb.CreateVolumeRequest(name=f"c{i}", volume_capabilities=[cap]))
            csi_create.append(clock() - t0)
        work = base / "node"
        stage_publish: list[float] = []
        for i in range(n):
            staging, target = work / f"s{i}", work / f"t{i}"
            staging.mkdir(parents=True)
            t0 = clock()
            node.NodeStageVolume(
                pb.NodeStageVolumeRequest(
                    volume_id=f"c{i}", staging_target_path=str(staging), volume_capability=cap
                )
            )
            node.NodePublishVolume(
                pb.NodePublishVolumeRequest(
                    volume_id=f"c{i}", staging_target_path=str(staging),
                    target_path=str(target), volume_capability=cap,
                )
            )  # fmt: skip
            stage_publish.append(clock() - t0)
        # Swarm's path: no staging (the plugin does not offer it), NodePublish mounts.
        publish_only: list[float] = []
        for i in range(n):
            controller.CreateVolume(pb.CreateVolumeRequest(name=f"p{i}", volume_capabilities=[cap]))
            target = work / f"p{i}"
            t0 = clock()
            node.NodePublishVolume(
                pb.NodePublishVolumeRequest(
                    volume_id=f"p{i}", target_path=str(target), volume_capability=cap
                )
            )
            publish_only.append(clock() - t0)
            node.NodeUnpublishVolume(
                pb.NodeUnpublishVolumeRequest(volume_id=f"p{i}", target_path=str(target))
            )
        for i in range(n):
            staging, target = work / f"s{i}", work / f"t{i}"
            node.NodeUnpublishVolume(
                pb.NodeUnpublishVolumeRequest(volume_id=f"c{i}", target_path=str(target))
            )
            node.NodeUnstageVolume(
                pb.NodeUnstageVolumeRequest(volume_id=f"c{i}", staging_target_path=str(staging))
            )
        channel.close()
        rows = {
            "docker Create": stats.summary(create),
            "CSI CreateVolume": stats.summary(csi_create),
            "docker Mount (first user)": stats.summary(mount),
            "CSI NodeStage+NodePublish": stats.summary(stage_publish),
            "CSI NodePublish (no staging, as Swarm)": stats.summary(publish_only),
        }
        return {"driver": "local", "n": n, "rows": rows, "load": stats.load_average()}
    finally:
        plugin.stop()
        _unmount_under(base)
        shutil.rmtree(base, ignore_errors=True)


def _unmount_under(base: Path) -> None:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [line.split(" ", 5)[4] for line in f]
    for p in sorted((p for p in points if p.startswith(str(base) + "/")), reverse=True):
        subprocess.run(["umount", "-l", p], check=False)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.csi_bench", description=__doc__)
    p.add_argument("--n", type=int, default=200, help="calls of each kind (default 200)")
    out = run(p.parse_args().n)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
