"""No two writers through the CSI front end: two ``dockvol serve --csi-endpoint`` processes with
the block driver on one shared root and a real 3-member etcd (no Docker engine).

Node a reaches etcd only through :class:`CutProxy` (one per member), so the test cuts a off etcd
while its plugin and a writer on its publish target keep running. The writer (a process of its
own) appends numbered, timestamped lines to a file on the volume and fsyncs each one. Every
timestamp is ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process on this host).
Then:

* while a holds the volume, b's NodeStageVolume is refused with FAILED_PRECONDITION naming a;
* after the cut, a's writer gets an error (the fence) before b's NodeStageVolume stops being
  refused for a's hold, and a says it is fenced (NodeGetVolumeStats' volume condition, its log,
  ``dockvol status``);
* b, attaching the image afresh, sees every line a's writer had fsynced before the error, the
  filesystem needs no repair (the block driver checks it at attach), and a write a tries after
  the fence never reaches b.

Without a cluster registry (Swarm-only CSI) there is no lease and nothing to fence: the last test
checks that a block volume then names its node as its only topology, so an orchestrator that
honours topology never publishes it on another node.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from dockvol._csi import csi_pb2 as pb
from dockvol._csi import csi_pb2_grpc as pb_grpc
from dockvol._csi.access import TOPOLOGY_KEY
from dockvol._service.names import volume_key
from dockvol.drivers.block import loop
from tests.cluster import csi_nodes
from tests.cluster.nodes import lines
from tests.csi.conftest import unmount_all_under
from tests.csi.test_controller import cap, code_of
from tests.support.plugin import Plugin

from .conftest import wait_for
from .etcd import EtcdCluster

TTL = 3.0
NAME = "dvcsifence"  # the plugin's name (its GetPluginInfo name too)

#: Appends "<monotonic> <n>" and fsyncs, every 20 ms, until a write or fsync fails; then prints
#: "FAILED <monotonic> <last line fsynced> <errno>".
WRITER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
i = 0
while True:
    try:
        os.write(fd, f"{time.monotonic():.4f} {i}\\n".encode())
        os.fsync(fd)
    except OSError as exc:
        print(f"FAILED {time.monotonic():.4f} {i - 1} {exc.errno}", flush=True)
        break
    i += 1
    time.sleep(0.02)  # pacing the writes, not synchronising
"""


class CsiNode(csi_nodes.CsiNode):
    def stage(self, vol: str, staging: Path, context: dict[str, str]) -> None:
        self.node.NodeStageVolume(
            pb.NodeStageVolumeRequest(
                volume_id=vol,
                staging_target_path=str(staging),
                volume_capability=cap(),
                volume_context=context,
            ),
            timeout=30,
        )

    def unstage(self, vol: str, staging: Path) -> None:
        self.node.NodeUnstageVolume(
            pb.NodeUnstageVolumeRequest(volume_id=vol, staging_target_path=str(staging)),
            timeout=30,
        )

    def publish(self, vol: str, staging: Path | None, target: Path) -> None:
        """``staging`` None: publish without staging, as Swarm does (staging is not offered)."""
        self.node.NodePublishVolume(
            pb.NodePublishVolumeRequest(
                volume_id=vol,
                staging_target_path=str(staging) if staging else "",
                target_path=str(target),
                volume_capability=cap(),
            ),
            timeout=30,
        )

    def unpublish(self, vol: str, target: Path) -> None:
        self.node.NodeUnpublishVolume(
            pb.NodeUnpublishVolumeRequest(volume_id=vol, target_path=str(target)), timeout=30
        )

    def condition(self, vol: str, path: Path) -> pb.VolumeCondition:
        req = pb.NodeGetVolumeStatsRequest(volume_id=vol, volume_path=str(path))
        reply: pb.NodeGetVolumeStatsResponse = self.node.NodeGetVolumeStats(req, timeout=30)
        return reply.volume_condition

    def knows(self, vol: str) -> bool:
        entries = self.controller.ListVolumes(pb.ListVolumesRequest(), timeout=30).entries
        return vol in {e.volume.volume_id for e in entries}


@pytest.fixture
def base() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="dvcf", dir="/tmp"))  # short: socket paths are limited
    (d / "root").mkdir()
    yield d
    unmount_all_under(d)  # binds and mounts a failed test left behind
    for lp in loop.under(d):  # never leave a device behind
        loop.detach(lp.device, lp.backing)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def pair(etcd: EtcdCluster, base: Path) -> Iterator[tuple[CsiNode, CsiNode]]:
    yield from csi_nodes.csi_pair(
        CsiNode, base, base / "root", etcd, "/cf" + uuid.uuid4().hex[:8],
        "--driver", "block", "--lease-ttl", str(TTL), "--log-level", "debug", plugin=NAME,
    )  # fmt: skip


def read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def test_a_cut_off_csi_node_fences_its_block_volume_before_another_node_can_stage_it(
    pair: tuple[CsiNode, CsiNode], base: Path
) -> None:
    a, b = pair
    vol = "cf-" + uuid.uuid4().hex[:6]
    created = a.controller.CreateVolume(
        pb.CreateVolumeRequest(name=vol, volume_capabilities=[cap()], parameters={"size": "32M"}),
        timeout=60,
    ).volume
    # On a shared root with a cluster registry the volume is reachable from every node.
    assert list(created.accessible_topology) == []
    context = dict(created.volume_context)
    wait_for(lambda: b.knows(vol), what="the volume in b's view")
    image = base / "root" / "images" / f"{volume_key(vol)}.img"
    a_staging, a_target = a.dir / "staging" / vol, a.dir / "target" / vol
    a.stage(vol, a_staging, context)
    a.publish(vol, a_staging, a_target)
    log = a_target / "log"
    out_path = base / "writer.out"
    with open(out_path, "wb") as out:
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(log)], stdout=out)
    try:
        wait_for(lambda: len(lines(read(log))) >= 5, what="the writer's first lines")
        assert not a.condition(vol, a_target).abnormal

        # While a holds the volume and etcd answers, b is refused, naming a.
        b_staging = b.dir / "staging" / vol
        code, msg = code_of(lambda: b.stage(vol, b_staging, context))
        assert code == grpc.StatusCode.FAILED_PRECONDITION, (code, msg)
        assert "in use on node 'a'" in msg, msg
        # The same for a publish without staging (Swarm's way).
        code, msg = code_of(lambda: b.publish(vol, None, b.dir / "target" / vol))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "in use on node 'a'" in msg, msg

        # -- the cut: a keeps running, only etcd is out of its reach ----------------------------
        cut_at = time.monotonic()
        a.cut()
        # b asks again and again. The first NodeStage not refused for a's hold is the takeover;
        # its start time is a lower bound of the moment b took the hold (the margin below is
        # never overstated). Both "nodes" share this kernel: b's stage reuses a's loop device,
        # whose shut-down filesystem lives on under a's binds, so it may fail for that (EIO); a
        # real second host attaches the image afresh (phase two does that).
        took_at: float | None = None
        took: str = ""
        while took_at is None and time.monotonic() < cut_at + TTL + 20:
            asked_at = time.monotonic()
            try:
                b.stage(vol, b_staging, context)
            except grpc.RpcError as exc:
                details = exc.details() or ""
                if "in use on node 'a'" not in details:
                    took_at, took = asked_at, f"refused otherwise: {exc.code()}: {details}"
                else:
                    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, details
            else:
                took_at, took = asked_at, "succeeded"
        assert took_at is not None, "b never took the volume over\n" + b.plugin.output()[-3000:]
        writer.wait(timeout=10)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    failed = next((x for x in read(out_path).splitlines() if x.startswith("FAILED")), "")
    assert failed, "a's writer never got an error"
    _, failed_at_s, last_s, _errno = failed.split()
    failed_at, last_good = float(failed_at_s), int(last_s)
    # a's writer got its error first, less than a TTL after the cut.
    assert cut_at < failed_at < took_at, (cut_at, failed_at, took_at, took)
    assert failed_at - cut_at < TTL, failed_at - cut_at
    if took == "succeeded":  # b's stage of the shut-down filesystem (this host only): undo it
        b.unstage(vol, b_staging)

    # A write a tries after the fence fails.
    with pytest.raises(OSError):
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, b"late\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    # a says so: the volume condition, its log, dockvol status; no new stage of it there.
    condition = a.condition(vol, a_target)
    assert condition.abnormal and "fenced" in condition.message, condition
    assert f"fenced single-node volume(s) {vol}" in a.plugin.output()
    status = subprocess.run(
        [sys.executable, "-m", "dockvol", "status", "--socket", str(a.plugin.sock)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert status.returncode == 2 and f"FENCED:   {vol}:" in status.stdout, status
    code, msg = code_of(lambda: a.stage(vol, a.dir / "again" / vol, context))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "fenced" in msg, (code, msg)

    # -- phase two: a (still cut off) unpublishes and unstages; its loop device is freed; b
    # attaches the image afresh, as a second host would, and reads what a had made durable.
    a.unpublish(vol, a_target)
    a.unstage(vol, a_staging)
    wait_for(lambda: not loop.backing(image), timeout=30, what="a's loop device freed")
    b_staging2 = b.dir / "staging2" / vol
    b.stage(vol, b_staging2, context)
    seen = (b_staging2 / "log").read_text()
    got = lines(seen)
    # Every fsynced line is there; the line whose fsync failed may or may not be; nothing after.
    assert set(range(last_good + 1)) <= set(got) <= set(range(last_good + 2)), (
        last_good,
        sorted(got)[-5:],
    )
    assert "late" not in seen and max(got.values()) < failed_at
    assert not b.condition(vol, b_staging2).abnormal
    print(
        f"CSI-FENCE-TIMING: cut->writer error {failed_at - cut_at:.2f}s, "
        f"cut->b's stage {took_at - cut_at:.2f}s ({took}), "
        f"margin {took_at - failed_at:.2f}s (ttl {TTL})"
    )
    b.unstage(vol, b_staging2)
    a.heal()

    def deleted() -> bool:
        try:
            b.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol), timeout=30)
        except grpc.RpcError:
            return False
        return True

    wait_for(deleted, timeout=30, what="the volume deleted")
    assert not image.exists() and not loop.backing(image)


def test_without_a_cluster_registry_a_block_volume_is_reachable_from_its_node_only(
    base: Path,
) -> None:
    """Swarm-only CSI (no etcd): the root is this host's, so a volume names this node as its
    only topology, and a CreateVolume that must be reachable elsewhere is refused."""
    sock = base / "solo-csi.sock"
    plugin = Plugin.start(
        base / "solo.sock", base / "root", base / "solo-state",
        "--driver", "block", "--node", "solo", "--csi-endpoint", f"unix://{sock}",
        name=NAME,
    )  # fmt: skip
    channel = grpc.insecure_channel(f"unix://{sock}")
    try:
        node = pb_grpc.NodeStub(channel)  # type: ignore[no-untyped-call]
        ctl = pb_grpc.ControllerStub(channel)  # type: ignore[no-untyped-call]
        info = node.NodeGetInfo(pb.NodeGetInfoRequest(), timeout=30)
        assert dict(info.accessible_topology.segments) == {TOPOLOGY_KEY: "solo"}
        vol = ctl.CreateVolume(
            pb.CreateVolumeRequest(name="solo-v", volume_capabilities=[cap()]), timeout=60
        ).volume
        assert [dict(t.segments) for t in vol.accessible_topology] == [{TOPOLOGY_KEY: "solo"}]
        elsewhere = pb.TopologyRequirement(
            requisite=[pb.Topology(segments={TOPOLOGY_KEY: "other"})]
        )
        code, msg = code_of(
            lambda: ctl.CreateVolume(
                pb.CreateVolumeRequest(
                    name="solo-w",
                    volume_capabilities=[cap()],
                    accessibility_requirements=elsewhere,
                ),
                timeout=60,
            )
        )
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "solo" in msg, (code, msg)
        names = {e.volume.volume_id for e in ctl.ListVolumes(pb.ListVolumesRequest()).entries}
        assert names == {"solo-v"}
        ctl.DeleteVolume(pb.DeleteVolumeRequest(volume_id="solo-v"), timeout=60)
    finally:
        channel.close()
        plugin.stop()
