"""The ``block`` driver as a Swarm cluster volume: the managed CSI plugin that ``dockvol plugin
build --driver block --csi`` makes, in a one-node swarm of Debian sid's engine (28.2 or later can
address a managed CSI plugin; see test_swarm.py).

What only a real Swarm shows: ``--required-bytes`` reaches the driver as the image's size and the
task's ``df`` shows it, the filesystem refuses writes past it, the data outlives the service
(another service finds it), the loop device is detached when Swarm unpublishes the volume, and
drain then ``docker volume rm`` deletes the image.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.csi.managed import build_csi_plugin
from tests.csi.test_swarm import wait_for
from tests.support.engine import BUSYBOX_IMAGE, Engine
from tests.support.swarm import leave_swarm, reports_csi, swarm_init, volume_field

pytestmark = pytest.mark.engine

BLOCK = "dvblk:1"
MiB = 1 << 20


@pytest.fixture(scope="module")
def node() -> Iterator[Engine]:
    d = Path(tempfile.mkdtemp(prefix="dvcsib", dir="/tmp"))
    eng = Engine.start(version="sid")
    try:
        build_csi_plugin(eng, d, "block", name=BLOCK, DOCKVOL_NODE="node-b")
        swarm_init(eng)
        node_id = eng.docker("info", "-f", "{{.Swarm.NodeID}}").stdout.strip()
        wait_for(
            lambda: reports_csi(eng, node_id, BLOCK),
            timeout=90,
            what=f"the node reporting {BLOCK} to the swarm\n{eng.tail_log(60)}",
        )
        yield eng
    finally:
        try:
            leave_swarm(eng)
        finally:
            eng.stop()
            shutil.rmtree(d, ignore_errors=True)


def _task_container(eng: Engine, svc: str) -> str:
    return eng.docker(
        "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={svc}"
    ).stdout.strip()


def _images(eng: Engine) -> list[Path]:
    """The block driver's image files in the plugin's propagated mount (where it keeps volumes)."""
    plugins = eng.dir / "data" / "plugins"
    return list(plugins.glob("*/propagated-mount/.dockvol/volumes/images/*.img"))


def _loops_backed_by(images: list[Path]) -> list[str]:
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    names = [p.name for p in images]
    return [line for line in out.splitlines() if any(n in line for n in names)]


def _run_service(eng: Engine, svc: str, vol: str, script: str) -> str:
    """A one-task service on ``vol`` running ``script`` then sleeping; its container ID once
    it runs."""
    eng.docker(
        "service", "create", "--detach", "--no-resolve-image", "--name", svc,
        "--stop-grace-period", "1s", "--mount", f"type=cluster,source={vol},target=/d",
        BUSYBOX_IMAGE, "sh", "-c", f"{script}; sleep 300",
    )  # fmt: skip
    return wait_for(
        lambda: _task_container(eng, svc),
        timeout=180,
        what=f"service {svc}'s task running\n{eng.tail_log(60)}",
    )


def _remove_service(eng: Engine, svc: str, vol: str) -> None:
    eng.docker("service", "rm", svc)
    wait_for(
        lambda: volume_field(eng, vol, "{{len .ClusterVolume.PublishStatus}}") in ("", "0"),
        timeout=120,
        what=f"{vol} unpublished after its service went\n{eng.tail_log(60)}",
    )


def test_block_volume_has_its_size_keeps_its_data_and_is_deleted(node: Engine) -> None:
    eng = node
    vol = f"blk{uuid.uuid4().hex[:6]}"
    eng.docker(
        "volume", "create", "--driver", BLOCK, "--type", "mount", "--scope", "single",
        "--sharing", "none", "--required-bytes", "64MiB", vol,
    )  # fmt: skip
    wait_for(
        lambda: volume_field(eng, vol, "{{.ClusterVolume.Info.VolumeID}}"),
        timeout=90,
        what=f"{vol} created through the CSI controller\n{eng.tail_log(60)}",
    )
    (image,) = wait_for(lambda: _images(eng), what="the volume's image file")

    first = f"svc{uuid.uuid4().hex[:6]}"
    cid = _run_service(eng, first, vol, "echo kept > /d/data")
    df = eng.docker("exec", cid, "df", "-k", "/d").stdout.splitlines()[-1].split()
    size_kib = int(df[1])
    assert abs(size_kib * 1024 - 64 * MiB) <= 0.01 * 64 * MiB, df  # df shows what was asked
    fill = eng.docker(
        "exec", cid, "dd", "if=/dev/zero", "of=/d/fill", "bs=1M", "count=80", check=False
    )
    assert fill.returncode != 0 and "No space left" in fill.stderr, fill.stderr
    assert _loops_backed_by([image]), "the image is not attached while the task runs"
    _remove_service(eng, first, vol)
    assert not _loops_backed_by([image]), "the loop device outlived the publish"

    second = f"svc{uuid.uuid4().hex[:6]}"
    cid = _run_service(eng, second, vol, "true")
    assert eng.docker("exec", cid, "cat", "/d/data").stdout == "kept\n"
    _remove_service(eng, second, vol)

    eng.docker("volume", "update", "--availability", "drain", vol)
    eng.docker("volume", "rm", vol)
    wait_for(
        lambda: eng.docker("volume", "inspect", vol, check=False).returncode != 0,
        timeout=120,
        what=f"{vol} deleted\n{eng.tail_log(60)}",
    )
    wait_for(lambda: not image.exists(), timeout=30, what="the image file deleted")
