"""The ``shared`` driver with an etcd registry, through three real private Docker engines.

Three nodes (a, b, c): each a private dockerd in its own mount namespace with its own
``dockvol serve --driver shared --registry etcd://...``, all on one shared directory standing in
for the shared filesystem, and a real 3-member etcd cluster on loopback.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.engine import BUSYBOX_IMAGE

from .conftest import wait_for
from .etcd import EtcdCluster
from .nodes import DRIVER, Node, start_all, start_node

pytestmark = pytest.mark.engine

TTL = 3.0


@pytest.fixture(scope="module")
def shared_root() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="dvsh", dir="/tmp"))
    (d / "root").mkdir()
    yield d / "root"
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def nodes(etcd: EtcdCluster, shared_root: Path) -> Iterator[dict[str, Node]]:
    started, errors = start_all(lambda n: start_node(n, etcd, shared_root, TTL), "abc")
    try:
        if errors:
            raise errors[0]
        yield started
    finally:
        for node in started.values():
            node.stop()


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def run(node: Node, vol: str, *cmd: str, detach: bool = False, check: bool = True) -> str:
    """``docker run`` on ``node`` with ``vol`` at /d; returns stdout (or the container ID)."""
    args = ["run", "--network", "none", "--volume-driver", DRIVER, "-v", f"{vol}:/d"]
    args += ["-d"] if detach else ["--rm"]
    r = node.docker(*args, BUSYBOX_IMAGE, *cmd, check=check)
    return r.stdout.strip() if r.returncode == 0 else "ERROR: " + r.stderr


def names(node: Node) -> list[str]:
    return node.docker("volume", "ls", "-q").stdout.split()


def test_volume_created_on_a_is_listed_and_usable_on_b_and_c(nodes: dict[str, Node]) -> None:
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    v = uniq("abc")
    a.docker("volume", "create", "-d", DRIVER, v)
    for n in (b, c):
        assert v in wait_for(lambda n=n: v in names(n) and names(n), what=f"{v} listed on {n.name}")
        assert run(n, v, "sh", "-c", "echo ok > /d/from-" + n.name) == ""
    # Every node's container wrote into the same directory of the shared filesystem.
    inspect = a.docker("volume", "inspect", "-f", "{{.Status.path}}", v).stdout.strip()
    assert sorted(p.name for p in Path(inspect).iterdir()) == ["from-b", "from-c"]


def test_data_written_on_a_is_read_on_b(nodes: dict[str, Node]) -> None:
    a, b = nodes["a"], nodes["b"]
    v = uniq("data")
    a.docker("volume", "create", "-d", DRIVER, v)
    assert run(a, v, "sh", "-c", "echo written-on-a > /d/file") == ""
    assert run(b, v, "cat", "/d/file") == "written-on-a"


def test_multi_volume_is_mounted_on_two_nodes_at_once_and_removable_only_when_unused(
    nodes: dict[str, Node],
) -> None:
    a, b = nodes["a"], nodes["b"]
    v = uniq("multi")
    a.docker("volume", "create", "-d", DRIVER, "-o", "access=multi", v)
    ca = run(a, v, "sleep", "300", detach=True)
    cb = run(b, v, "sleep", "300", detach=True)
    try:
        wait_for(lambda: status(a, v).get("nodes") == ["a", "b"], what="both nodes shown in Status")
        # c uses it nowhere, yet cannot remove it while a and b do.
        refused = nodes["c"].docker("volume", "rm", v, check=False)
        assert refused.returncode != 0 and "in use on node(s) a, b" in refused.stderr
    finally:
        a.docker("rm", "-f", ca)
        b.docker("rm", "-f", cb)
    wait_for(lambda: status(a, v).get("nodes") == [], what="both nodes released")
    nodes["c"].docker("volume", "rm", v)
    assert v not in names(a)


def test_single_node_volume_is_refused_on_b_while_a_uses_it(nodes: dict[str, Node]) -> None:
    a, b = nodes["a"], nodes["b"]
    v = uniq("single")
    a.docker("volume", "create", "-d", DRIVER, "-o", "access=single-node", v)
    cid = run(a, v, "sleep", "300", detach=True)
    try:
        out = run(b, v, "true", check=False)
        assert out.startswith("ERROR") and "single-node and in use on node 'a'" in out
        assert status(b, v)["holder"]["node"] == "a"
    finally:
        a.docker("rm", "-f", cid)
    assert run(b, v, "true") == ""  # released by a's last unmount


def test_single_node_containers_started_at_once_on_two_nodes_one_runs(
    nodes: dict[str, Node],
) -> None:
    a, b = nodes["a"], nodes["b"]
    v = uniq("both")
    a.docker("volume", "create", "-d", DRIVER, "-o", "access=single-node", v)
    wait_for(lambda: v in names(b), what=f"{v} on b")
    barrier = threading.Barrier(2)
    out: dict[str, str] = {}

    def start(n: Node) -> None:
        barrier.wait()
        out[n.name] = run(n, v, "sleep", "300", detach=True, check=False)

    threads = [threading.Thread(target=start, args=(n,)) for n in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        winners = [n for n, o in out.items() if not o.startswith("ERROR")]
        assert len(winners) == 1
        (loser,) = set(out) - set(winners)
        assert f"single-node and in use on node '{winners[0]}'" in out[loser]
    finally:
        for n in (a, b):
            for cid in n.docker("ps", "-aq", "--filter", f"volume={v}").stdout.split():
                n.docker("rm", "-f", cid, check=False)


def test_plugin_restart_keeps_mounts_and_the_single_node_hold(nodes: dict[str, Node]) -> None:
    a, b = nodes["a"], nodes["b"]
    v = uniq("restart")
    a.docker("volume", "create", "-d", DRIVER, "-o", "access=single-node", v)
    cid = run(a, v, "sleep", "300", detach=True)
    try:
        assert a.plugin is not None
        assert a.plugin.stop() == 0
        a.start_plugin()  # same node, same state: its mount record and its hold are back
        assert status(a, v)["mounts"] == 1
        wait_for(lambda: status(b, v).get("nodes") == ["a"], what="a's mount republished")
        wait_for(lambda: (status(b, v).get("holder") or {}).get("node") == "a", what="a holding")
        assert "in use on node 'a'" in run(b, v, "true", check=False)
    finally:
        a.docker("rm", "-f", cid)  # the Unmount reaches the new plugin process
    assert status(a, v)["mounts"] == 0
    assert run(b, v, "true") == ""


def test_concurrent_create_from_all_nodes_ends_with_one_volume(
    nodes: dict[str, Node], shared_root: Path
) -> None:
    v = uniq("race")
    barrier = threading.Barrier(len(nodes))
    results: dict[str, int] = {}

    def create(n: Node) -> None:
        barrier.wait()
        r = n.docker("volume", "create", "-d", DRIVER, "-o", "access=multi", v, check=False)
        results[n.name] = r.returncode

    threads = [threading.Thread(target=create, args=(n,)) for n in nodes.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"a": 0, "b": 0, "c": 0}  # same options: create is idempotent
    assert len([p for p in shared_root.iterdir() if p.name.startswith(v + "-")]) == 1
    for n in nodes.values():
        assert wait_for(
            lambda n=n: names(n).count(v) == 1,
            what=f"one {v} on {n.name}: {names(n)} {n.plugin.output()[-3000:] if n.plugin else ''}",
        )


def test_one_etcd_member_killed_operations_go_on(etcd: EtcdCluster, nodes: dict[str, Node]) -> None:
    a, c = nodes["a"], nodes["c"]
    v = uniq("member")
    etcd.kill(0)
    try:
        a.docker("volume", "create", "-d", DRIVER, "-o", "access=single-node", v)
        assert run(a, v, "sh", "-c", "echo survived > /d/f") == ""
        assert run(c, v, "cat", "/d/f") == "survived"
        c.docker("volume", "rm", v)
        wait_for(lambda: v not in names(a), what="removal seen on a")
    finally:
        etcd.restart(0)


def test_etcd_unreachable_from_a_node_fences_new_single_node_mounts(
    nodes: dict[str, Node],
) -> None:
    b, c = nodes["b"], nodes["c"]
    held, new, shared = uniq("held"), uniq("new"), uniq("shared")
    for v, access in ((held, "single-node"), (new, "single-node"), (shared, "multi")):
        b.docker("volume", "create", "-d", DRIVER, "-o", f"access={access}", v)
        wait_for(lambda v=v: v in names(c), what=f"{v} on c")
    cid = run(c, held, "sleep", "300", detach=True)
    c.cut()
    try:
        out = run(c, new, "true", check=False)
        assert out.startswith("ERROR") and "cannot reach etcd" in out
        assert f"single-node volume '{new}'" in out
        # The running container is untouched and still writes to its volume.
        c.docker("exec", cid, "sh", "-c", "echo still-here > /d/f")
        assert c.docker("inspect", "-f", "{{.State.Running}}", cid).stdout.strip() == "true"
        # Multi volumes need no lock: they still mount.
        assert run(c, shared, "true") == ""
    finally:
        c.heal()
    # Back in touch, c takes its holder again (on a new lease if the old one expired).
    wait_for(lambda: (status(b, held).get("holder") or {}).get("node") == "c", what="c holding")
    assert "in use on node 'c'" in run(b, held, "true", check=False)
    c.docker("rm", "-f", cid)
    assert run(b, held, "cat", "/d/f") == "still-here"


def test_node_death_releases_single_node_volume_after_the_ttl(
    etcd: EtcdCluster, nodes: dict[str, Node], shared_root: Path
) -> None:
    b = nodes["b"]
    d = start_node("d", etcd, shared_root, TTL)  # the victim: its own engine
    try:
        v = uniq("failover")
        d.docker("volume", "create", "-d", DRIVER, "-o", "access=single-node", v)
        run(d, v, "sh", "-c", "echo from-d > /d/f; sleep 300", detach=True)
        wait_for(lambda: (shared_root / _key(d, v) / "f").exists(), what="d's container writing")
        assert "in use on node 'd'" in run(b, v, "true", check=False)
        d.kill()

        def read_on_b() -> str | None:
            out = run(b, v, "cat", "/d/f", check=False)
            return None if out.startswith("ERROR") else out

        out = wait_for(read_on_b, timeout=TTL + 30, what="b mounting the dead node's volume")
        assert out == "from-d"
    finally:
        d.stop()


def status(node: Node, vol: str) -> dict[str, Any]:
    out = node.docker("volume", "inspect", "-f", "{{json .Status}}", vol).stdout
    return dict(json.loads(out))


def _key(node: Node, vol: str) -> str:
    path = node.docker("volume", "inspect", "-f", "{{.Status.path}}", vol).stdout.strip()
    return Path(path).name
