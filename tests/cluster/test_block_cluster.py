"""The ``block`` driver with an etcd registry, through two real private Docker engines.

Two nodes (a, b): each a private dockerd with its own ``dockvol serve --driver block --registry
etcd://...`` running inside the engine's mount namespace (the engine must see its mounts), one
shared directory standing in for the shared filesystem that holds the images. A block volume is
single-node: it is attached on one node at a time and moves between nodes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockvol._service.names import volume_key
from dockvol.drivers.block import loop
from tests.support.engine import BUSYBOX_IMAGE, Engine
from tests.support.plugin import Plugin, call

from .conftest import wait_for
from .etcd import EtcdCluster
from .nodes import block_root, start_all

pytestmark = pytest.mark.engine

DRIVER = "block"
TTL = 3.0


@dataclass
class BlockNode:
    name: str
    engine: Engine
    plugin: Plugin

    def docker(self, *args: str, check: bool = True) -> str:
        r = self.engine.docker(*args, check=check)
        return r.stdout.strip() if r.returncode == 0 else "ERROR: " + r.stderr

    def run(self, vol: str, *cmd: str, detach: bool = False) -> str:
        args = ["run", "--network", "none", "--volume-driver", DRIVER, "-v", f"{vol}:/d"]
        return self.docker(*args, "-d" if detach else "--rm", BUSYBOX_IMAGE, *cmd, check=False)


@pytest.fixture(scope="module")
def shared_root() -> Iterator[Path]:
    yield from block_root("dvbc")


def _start(name: str, etcd: EtcdCluster, root: Path, prefix: str) -> BlockNode:
    engine = Engine.start()
    try:
        engine.ensure_busybox()
        plugin = Plugin.start(
            engine.plugins_dir / f"{DRIVER}.sock", root, engine.dir / "dvstate",
            "--driver", "block", "--registry", f"{etcd.url}{prefix}", "--node", name,
            "--lease-ttl", str(TTL), "--log-level", "debug",
            name=DRIVER, wrap=engine.enter_args(),
        )  # fmt: skip
    except BaseException:
        engine.stop()
        raise
    return BlockNode(name, engine, plugin)


@pytest.fixture(scope="module")
def nodes(etcd: EtcdCluster, shared_root: Path) -> Iterator[dict[str, BlockNode]]:
    prefix = "/blk" + uuid.uuid4().hex[:8]
    started, errors = start_all(lambda n: _start(n, etcd, shared_root, prefix), "ab")
    try:
        if errors:
            raise errors[0]
        yield started
    finally:
        for node in started.values():
            for cid in node.docker("ps", "-aq", check=False).split():
                node.docker("rm", "-f", cid, check=False)
        for node in started.values():
            for v in node.docker("volume", "ls", "-q", check=False).split():
                node.docker("volume", "rm", v, check=False)
        for node in started.values():
            node.plugin.stop()
            node.engine.stop()


def image(root: Path, vol: str) -> Path:
    return root / "images" / f"{volume_key(vol)}.img"


def test_capabilities_scope_is_global_on_every_node(nodes: dict[str, BlockNode]) -> None:
    for node in nodes.values():
        code, body = call(node.plugin.sock, "VolumeDriver.Capabilities", {})
        assert code == 200 and body == {"Capabilities": {"Scope": "global"}}, (node.name, body)


def test_access_multi_is_refused_with_a_reason(nodes: dict[str, BlockNode]) -> None:
    out = nodes["a"].docker(
        "volume", "create", "-d", DRIVER, "-o", "access=multi", "bm", check=False
    )
    assert out.startswith("ERROR:") and "single-node only" in out and "corrupt" in out, out


def test_block_volume_moves_from_a_to_b_with_its_data(
    nodes: dict[str, BlockNode], shared_root: Path
) -> None:
    a, b = nodes["a"], nodes["b"]
    vol = "mv-" + uuid.uuid4().hex[:6]
    a.docker("volume", "create", "-d", DRIVER, "-o", "size=32M", vol)
    img = image(shared_root, vol)
    assert img.is_file(), "the image must live on the shared root"
    wait_for(lambda: vol in b.docker("volume", "ls", "-q").split(), what=f"{vol} listed on b")

    # A container on a writes data; the volume is attached on a.
    cid = a.run(vol, "sh", "-c", "echo from-a > /d/f && sync && exec sleep 600", detach=True)
    assert not cid.startswith("ERROR"), cid
    wait_for(
        lambda: a.docker("exec", cid, "cat", "/d/f", check=False) == "from-a", what="a's write"
    )
    assert len(loop.backing(img)) == 1
    # Size-limited: the 32M volume fills up, not the host.
    full = a.docker(
        "exec", cid, "dd", "if=/dev/zero", "of=/d/big", "bs=1M", "count=64", check=False
    )
    assert "No space left on device" in full, full
    a.docker("exec", cid, "rm", "/d/big")

    # b is refused while a uses it, with the holder named.
    refused = b.run(vol, "cat", "/d/f")
    assert refused.startswith("ERROR") and "in use on node 'a'" in refused, refused

    # a's container stops: the last unmount detaches on a; then b mounts and reads a's data.
    a.docker("rm", "-f", cid)
    wait_for(lambda: not loop.backing(img), what="a to detach the image")
    assert b.run(vol, "cat", "/d/f") == "from-a"
    assert not loop.backing(img), "b must detach after its last unmount"

    # Mounts are per node, never on the shared root.
    assert not (shared_root / "mounts").exists()
    assert (b.plugin.state / "mounts" / volume_key(vol)).is_dir()

    b.docker("volume", "rm", vol)
    assert not img.exists()
    wait_for(lambda: vol not in a.docker("volume", "ls", "-q").split(), what="removal seen on a")
