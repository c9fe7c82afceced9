"""Swarm services on two private engines (a manager and a worker on loopback) using dockvol
``shared`` volumes coordinated through etcd: Swarm creates the volume on every node a task
lands on, so the plugin must answer each node with the one cluster-wide volume.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.engine import BUSYBOX_IMAGE
from tests.support.swarm import swarm_init, swarm_join

from .conftest import wait_for
from .etcd import EtcdCluster
from .nodes import DRIVER, Node, start_node

pytestmark = pytest.mark.engine

TTL = 3.0


@pytest.fixture(scope="module")
def swarm(etcd: EtcdCluster) -> Iterator[tuple[Node, Node, Path]]:
    d = Path(tempfile.mkdtemp(prefix="dvsw", dir="/tmp"))
    root = d / "root"
    root.mkdir()
    started: list[Node] = []
    try:
        manager = start_node("m", etcd, root, TTL)
        started.append(manager)
        worker = start_node("w", etcd, root, TTL)
        started.append(worker)
        swarm_join(worker, manager, swarm_init(manager))
        wait_for(lambda: _ready_nodes(manager) == 2, timeout=60, what="both swarm nodes ready")
        # Swarm schedules a task only on nodes that report the volume plugin, and an engine
        # reports a legacy (socket) plugin only once it has used it: make each node use it.
        for n in started:
            warm = f"warmup-{n.name}-{uuid.uuid4().hex[:6]}"
            n.docker("volume", "create", "-d", DRIVER, warm)
            n.docker("volume", "rm", warm)
        ids = [node_id(n) for n in started]
        wait_for(
            lambda: all(_reports_plugin(manager, i) for i in ids),
            timeout=60,
            what="both nodes reporting the volume plugin to the swarm",
        )
        yield manager, worker, root
    finally:
        for n in reversed(started):
            n.docker("swarm", "leave", "--force", check=False)
        for n in started:
            n.stop()
        shutil.rmtree(d, ignore_errors=True)


def _reports_plugin(manager: Node, node: str) -> bool:
    fmt = "{{range .Description.Engine.Plugins}}{{.Type}}={{.Name}} {{end}}"
    out = manager.docker("node", "inspect", "-f", fmt, node, check=False).stdout
    return f"Volume={DRIVER}" in out.split()


def _ready_nodes(manager: Node) -> int:
    out = manager.docker("node", "ls", "--format", "{{.Status}}", check=False).stdout
    return out.split().count("Ready")


def node_id(n: Node) -> str:
    return n.docker("info", "-f", "{{.Swarm.NodeID}}").stdout.strip()


def running_tasks(manager: Node, service: str) -> dict[str, str]:
    """Running tasks of ``service``: task ID -> node ID."""
    out = manager.docker(
        "service", "ps", service, "--filter", "desired-state=running",
        "--format", "{{.ID}} {{.CurrentState}}", "--no-trunc",
    ).stdout  # fmt: skip
    tasks = {}
    for line in out.splitlines():
        tid, state = line.split(" ", 1)
        if state.startswith("Running"):
            node = manager.docker("inspect", "-f", "{{.NodeID}}", tid).stdout.strip()
            tasks[tid] = node
    return tasks


def containers_of(n: Node, service: str) -> list[str]:
    out = n.docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}")
    return out.stdout.split()


def create_service(manager: Node, name: str, vol: str, replicas: int, script: str) -> None:
    manager.docker(
        "service", "create", "--detach", "--no-resolve-image", "--name", name,
        "--replicas", str(replicas), "--replicas-max-per-node", "1",
        "--restart-delay", "1s", "--stop-grace-period", "1s",
        "--mount", f"type=volume,source={vol},target=/d,volume-driver={DRIVER}",
        BUSYBOX_IMAGE, "sh", "-c", script,
    )  # fmt: skip


def test_two_replicas_on_two_nodes_share_one_multi_volume(
    swarm: tuple[Node, Node, Path],
) -> None:
    manager, worker, root = swarm
    vol, svc = f"sw-{uuid.uuid4().hex[:6]}", f"svc{uuid.uuid4().hex[:6]}"
    manager.docker("volume", "create", "-d", DRIVER, "-o", "access=multi", vol)
    create_service(manager, svc, vol, 2, "echo hi > /d/$(hostname); sleep 300")
    try:
        tasks = wait_for(
            lambda: (t := running_tasks(manager, svc)) and len(set(t.values())) == 2 and t,
            timeout=120,
            what="one running task on each node",
        )
        assert set(tasks.values()) == {node_id(manager), node_id(worker)}
        # Each task wrote its own file; each node's container sees both (same volume).
        for n in (manager, worker):
            (cid,) = containers_of(n, svc)
            seen = wait_for(
                lambda cid=cid, n=n: (
                    len(files := n.docker("exec", cid, "ls", "/d").stdout.split()) == 2 and files
                ),
                what=f"both tasks' files from {n.name}",
            )
            assert len(seen) == 2
        key = manager.docker("volume", "inspect", "-f", "{{.Status.path}}", vol).stdout.strip()
        assert sorted(p.name for p in Path(key).iterdir()) == sorted(seen)
        assert Path(key).parent == root
    finally:
        manager.docker("service", "rm", svc, check=False)


def test_single_node_volume_follows_its_task_when_the_node_is_drained(
    swarm: tuple[Node, Node, Path],
) -> None:
    manager, worker, _ = swarm
    vol, svc = f"sn-{uuid.uuid4().hex[:6]}", f"svc{uuid.uuid4().hex[:6]}"
    manager.docker("volume", "create", "-d", DRIVER, "-o", "access=single-node", vol)
    create_service(manager, svc, vol, 1, "echo $(hostname) >> /d/log; sleep 300")
    by_id = {node_id(manager): manager, node_id(worker): worker}
    drained: str | None = None
    try:
        (first,) = wait_for(
            lambda: list(running_tasks(manager, svc).values()), timeout=120, what="task running"
        )
        holder = by_id[first]
        wait_for(lambda: _holder(manager, vol) == holder.name, what=f"{holder.name} holding {vol}")
        manager.docker("node", "update", "--availability", "drain", first)
        drained = first
        (second,) = wait_for(
            lambda: [n for n in running_tasks(manager, svc).values() if n != first] or None,
            timeout=120,
            what="the task running on the other node",
        )
        other = by_id[second]
        assert other is not holder
        wait_for(lambda: _holder(manager, vol) == other.name, what=f"{vol} following its task")
        (cid,) = containers_of(other, svc)
        log = wait_for(
            lambda: (
                len(lines := other.docker("exec", cid, "cat", "/d/log").stdout.split()) == 2
                and lines
            ),
            what="the second task appending to the first task's data",
        )
        assert len(set(log)) == 2
    finally:
        manager.docker("service", "rm", svc, check=False)
        if drained is not None:
            manager.docker("node", "update", "--availability", "active", drained, check=False)


def _holder(n: Node, vol: str) -> str | None:
    out = n.docker(
        "volume",
        "inspect",
        "-f",
        "{{if .Status.holder}}{{.Status.holder.node}}{{end}}",
        vol,
        check=False,
    ).stdout.strip()
    return out or None
