"""Swarm cluster volumes served by the managed CSI plugin that ``dockvol plugin build --csi``
makes: two private engines in one swarm on loopback, the plugin (the ``shared`` driver, its
``shared`` bind mount set to one directory) enabled on both.

The engines are Debian sid's (28.5.2 when written): engines 26.0 to 28.1, Debian 13's 26.1.5
among them, cannot address a managed CSI plugin at all (moby/moby#49961, fixed in 28.2.0);
test_engine26_cannot_address_csi_plugins shows what a user of 26.1.5 sees.

Slow (two engines, a plugin build per engine, Swarm's reconciliation loops): one module, one
swarm, the cases in order.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from tests.csi.managed import PLUGIN, build_csi_plugin
from tests.support.engine import BUSYBOX_IMAGE, Engine
from tests.support.swarm import reports_csi, swarm_init, swarm_join, volume_field

pytestmark = pytest.mark.engine

#: A driver class of the test's own (tests/csi/gated/), shipped as a second CSI plugin the way a
#: driver author ships theirs: it can hold a NodeStage open for a kill -9.
GATED = "dvgate:1"
GATED_DRIVER = "gated_shared:GatedSharedDriver"
GATED_DIR = Path(__file__).parent / "gated"

T = TypeVar("T")


def wait_for(cond: Callable[[], T], timeout: float = 60.0, what: str = "condition") -> T:
    """Poll ``cond`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)  # polling a condition with a deadline


@dataclass
class Swarm:
    manager: Engine
    worker: Engine
    shared: Path
    ids: dict[str, Engine]  # swarm node ID -> engine
    csi_reported: bool | None = None  # both nodes reported the plugin (checked once)

    def node_id(self, eng: Engine) -> str:
        return next(i for i, e in self.ids.items() if e is eng)

    def wait_csi_reported(self) -> None:
        """Both nodes report the CSI plugin to the swarm (Swarm schedules by it); checked
        once per module, a failure repeats at once."""
        if self.csi_reported is None:
            self.csi_reported = False
            wait_for(
                lambda: all(
                    reports_csi(self.manager, i, p) for i in self.ids for p in (PLUGIN, GATED)
                ),
                timeout=90,
                what=f"both nodes reporting the CSI plugin to the swarm\n{self.logs()}",
            )
            self.csi_reported = True
        assert self.csi_reported, "the nodes never reported the CSI plugin (see the first test)"

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} engine log ---\n{eng.tail_log(80)}"
            for name, eng in (("manager", self.manager), ("worker", self.worker))
        )


@pytest.fixture(scope="module")
def swarm() -> Iterator[Swarm]:
    d = Path(tempfile.mkdtemp(prefix="dvcsi", dir="/tmp"))
    shared = d / "shared"
    shared.mkdir()
    started: list[Engine] = []
    try:
        manager = Engine.start(version="sid")
        started.append(manager)
        assert not _pluginaddr_bug(manager.version), (
            f"engine {manager.version} cannot address managed CSI plugins (moby/moby#49961): "
            "point DOCKVOL_ENGINE_SID at an engine of 28.2 or later"
        )
        worker = Engine.start(version="sid")
        started.append(worker)
        for name, eng in (("node-m", manager), ("node-w", worker)):
            build_csi_plugin(eng, shared, DOCKVOL_NODE=name)
            build_csi_plugin(
                eng, shared, GATED_DRIVER, name=GATED, cwd=GATED_DIR, DOCKVOL_NODE=name
            )
        swarm_join(worker, manager, swarm_init(manager))
        ids = {
            eng.docker("info", "-f", "{{.Swarm.NodeID}}").stdout.strip(): eng
            for eng in (manager, worker)
        }
        yield Swarm(manager, worker, shared, ids)
    finally:
        for eng in reversed(started):
            eng.docker("swarm", "leave", "--force", check=False)
        for eng in started:
            for p in eng.docker("plugin", "ls", "-q", check=False).stdout.split():
                eng.docker("plugin", "disable", "-f", p, check=False)
            eng.stop()
        shutil.rmtree(d, ignore_errors=True)


def _create_volume(sw: Swarm, vol: str, plugin: str, scope: str, sharing: str, *extra: str) -> None:
    """``docker volume create --type mount`` on the manager, then wait for the CSI controller
    to have created it (its volume ID)."""
    sw.manager.docker(
        "volume", "create", "--driver", plugin, "--type", "mount", "--scope", scope,
        "--sharing", sharing, *extra, vol,
    )  # fmt: skip
    wait_for(
        lambda: volume_field(sw.manager, vol, "{{.ClusterVolume.Info.VolumeID}}"),
        timeout=90,
        what=f"{vol} created through the CSI controller\n{sw.logs()}",
    )


def _running_on(sw: Swarm, svc: str) -> list[str]:
    out = sw.manager.docker(
        "service", "ps", svc, "--filter", "desired-state=running",
        "--format", "{{.ID}} {{.CurrentState}}", "--no-trunc",
    ).stdout  # fmt: skip
    nodes = []
    for line in out.splitlines():
        tid, state = line.split(" ", 1)
        if state.startswith("Running"):
            nodes.append(sw.manager.docker("inspect", "-f", "{{.NodeID}}", tid).stdout.strip())
    return nodes


def _volume_dirs(sw: Swarm) -> list[Path]:
    return [p for p in sw.shared.iterdir() if not p.name.startswith(".")]


def _pluginaddr_bug(version: str) -> bool:
    """Engines 26.0 to 28.1 (and 25.0.12) cannot use any managed CSI plugin: their adapter
    between Docker's plugin store and swarmkit hides the plugin's socket address, so the
    manager logs 'volume creation failed: plugin for driver "NAME" does not implement
    PluginAddr' and nodes never report CSI info (moby/moby#49961, fixed in 28.2.0 and 25.0.13).
    Debian 13's 26.1.5 is affected; Debian sid's 28.5.2 is not."""
    nums = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    if nums is None:
        return False
    v = tuple(int(n) for n in nums.groups())
    return (26, 0, 0) <= v < (28, 2, 0) or v == (25, 0, 12)


def test_single_node_volume_moves_with_its_service(swarm: Swarm) -> None:
    sw = swarm
    sw.wait_csi_reported()
    vol, svc = f"sn{uuid.uuid4().hex[:6]}", f"svc{uuid.uuid4().hex[:6]}"
    _create_volume(sw, vol, PLUGIN, "single", "none", "--required-bytes", "1MB")
    first, second = sw.manager, sw.worker
    sw.manager.docker(
        "service", "create", "--detach", "--no-resolve-image", "--name", svc,
        "--restart-delay", "1s", "--stop-grace-period", "1s",
        "--constraint", f"node.id=={sw.node_id(first)}",
        "--mount", f"type=cluster,source={vol},target=/d",
        BUSYBOX_IMAGE, "sh", "-c", "echo $(hostname) >> /d/log; sleep 300",
    )  # fmt: skip
    try:
        wait_for(
            lambda: _running_on(sw, svc) == [sw.node_id(first)],
            timeout=180,
            what=f"the task running on the first node\n{sw.logs()}",
        )
        (vol_dir,) = wait_for(lambda: _volume_dirs(sw), what="the volume's directory")
        wait_for(lambda: (vol_dir / "log").exists(), what="the first task's write")
        sw.manager.docker(
            "service", "update", "--detach", "--constraint-rm", f"node.id=={sw.node_id(first)}",
            "--constraint-add", f"node.id=={sw.node_id(second)}", svc,
        )  # fmt: skip
        wait_for(
            lambda: _running_on(sw, svc) == [sw.node_id(second)],
            timeout=180,
            what=f"the task running on the second node\n{sw.logs()}",
        )
        lines = wait_for(
            lambda: len(t := (vol_dir / "log").read_text().split()) == 2 and t,
            what="the second task appending to the first task's data",
        )
        assert len(set(lines)) == 2  # two containers, one volume, in order
    finally:
        sw.manager.docker("service", "rm", svc, check=False)
    # Drain, then remove: the plugin deletes the storage.
    _drain_and_remove(sw, vol)
    wait_for(lambda: not vol_dir.exists(), timeout=30, what="the volume's directory deleted")


def _drain_and_remove(sw: Swarm, vol: str) -> None:
    sw.manager.docker("volume", "update", "--availability", "drain", vol)
    wait_for(
        lambda: volume_field(sw.manager, vol, "{{len .ClusterVolume.PublishStatus}}") in ("", "0"),
        timeout=120,
        what=f"{vol} unpublished everywhere\n{sw.logs()}",
    )
    sw.manager.docker("volume", "rm", vol)
    wait_for(
        lambda: sw.manager.docker("volume", "inspect", vol, check=False).returncode != 0,
        timeout=120,
        what=f"{vol} deleted\n{sw.logs()}",
    )


def test_multi_node_volume_serves_a_task_on_every_node_at_once(swarm: Swarm) -> None:
    sw = swarm
    sw.wait_csi_reported()
    vol, svc = f"mn{uuid.uuid4().hex[:6]}", f"svc{uuid.uuid4().hex[:6]}"
    _create_volume(sw, vol, PLUGIN, "multi", "all")
    sw.manager.docker(
        "service", "create", "--detach", "--no-resolve-image", "--name", svc,
        "--replicas", "2", "--replicas-max-per-node", "1",
        "--stop-grace-period", "1s", "--mount", f"type=cluster,source={vol},target=/d",
        BUSYBOX_IMAGE, "sh", "-c", "echo hi > /d/$(hostname); sleep 300",
    )  # fmt: skip
    try:
        try:
            wait_for(lambda: sorted(_running_on(sw, svc)) == sorted(sw.ids), timeout=180)
        except AssertionError:
            tasks = sw.manager.docker("service", "ps", "--no-trunc", svc, check=False).stdout
            volume = sw.manager.docker("volume", "inspect", vol, check=False).stdout
            raise AssertionError(
                f"no task on every node:\n{tasks}\n{volume}\n{sw.logs()}"
            ) from None
        (vol_dir,) = wait_for(lambda: _volume_dirs(sw), what="the volume's directory")
        # Both tasks, on two nodes at once, wrote into the one volume.
        wait_for(lambda: len(list(vol_dir.iterdir())) == 2, what="a file from each task")
    finally:
        sw.manager.docker("service", "rm", svc, check=False)
    _drain_and_remove(sw, vol)
    wait_for(lambda: not vol_dir.exists(), timeout=30, what="the volume's directory deleted")


def test_engine_frees_a_global_services_volume_at_once(swarm: Swarm) -> None:
    """What a ``--mode global`` service on a cluster volume meets (engine 28.5.2): Swarm gives
    each task the volume, then frees it in the same scheduling pass (swarmkit's path for tasks
    with a preassigned node does not reserve their volumes), so the node is told to unpublish
    it, the volume is published nowhere and the tasks wait in Preparing: no CSI plugin can run
    them. docs/csi.md gives the working equivalent (the replicated service of the test above).
    When an engine stops freeing the volume, this test fails: update the docs then."""
    sw = swarm
    sw.wait_csi_reported()
    vol, svc = f"gl{uuid.uuid4().hex[:6]}", f"svc{uuid.uuid4().hex[:6]}"
    _create_volume(sw, vol, PLUGIN, "multi", "all")
    swarm_id = volume_field(sw.manager, vol, "{{.ClusterVolume.ID}}")
    freed = (
        f'msg="attempting to unpublish volume" attempt=0 module=node/agent/csi volume.id={swarm_id}'
    )
    sw.manager.docker(
        "service", "create", "--detach", "--no-resolve-image", "--name", svc, "--mode", "global",
        "--stop-grace-period", "1s", "--mount", f"type=cluster,source={vol},target=/d",
        BUSYBOX_IMAGE, "sleep", "300",
    )  # fmt: skip
    try:
        # Each node's agent is told to unpublish the volume its task was just given.
        for eng in (sw.manager, sw.worker):
            wait_for(
                functools.partial(_logged, eng, freed),
                timeout=120,
                what=f"the volume freed on each node\n{sw.logs()}",
            )
        states = wait_for(lambda: _task_states(sw, svc), what="the global service's tasks")
        assert len(states) == 2 and all(t.startswith("Preparing") for t in states), states
        published = volume_field(sw.manager, vol, "{{len .ClusterVolume.PublishStatus}}")
        assert published in ("", "0"), published
    finally:
        sw.manager.docker("service", "rm", svc, check=False)
    _drain_and_remove(sw, vol)


def _logged(eng: Engine, line: str) -> bool:
    return line in eng.log.read_text(errors="replace")


def test_single_node_volume_is_never_published_on_two_nodes(swarm: Swarm) -> None:
    """Two replicas, at most one per node, on one single-node volume: Swarm runs one and keeps
    the other pending; the volume is published on one node only."""
    sw = swarm
    sw.wait_csi_reported()
    vol, svc = f"one{uuid.uuid4().hex[:6]}", f"svc{uuid.uuid4().hex[:6]}"
    _create_volume(sw, vol, PLUGIN, "single", "none")
    sw.manager.docker(
        "service", "create", "--detach", "--no-resolve-image", "--name", svc,
        "--replicas", "2", "--replicas-max-per-node", "1", "--stop-grace-period", "1s",
        "--mount", f"type=cluster,source={vol},target=/d",
        BUSYBOX_IMAGE, "sh", "-c", "echo $(hostname) >> /d/log; sleep 300",
    )  # fmt: skip
    try:
        wait_for(lambda: len(_running_on(sw, svc)) == 1, timeout=180, what="one task running")
        # The other task is known to the scheduler, and waits: pending, on no node.
        pending = wait_for(
            lambda: [t for t in _task_states(sw, svc) if t.startswith("Pending")],
            timeout=60,
            what="the second task pending",
        )
        assert len(pending) == 1 and pending[0].endswith("|"), pending  # on no node
        published = volume_field(
            sw.manager, vol,
            "{{range .ClusterVolume.PublishStatus}}{{.NodeID}}={{.State}} {{end}}",
        ).split()  # fmt: skip
        assert published == [f"{_running_on(sw, svc)[0]}=published"], published
        (vol_dir,) = _volume_dirs_named(sw, vol)
        lines = wait_for(lambda: (vol_dir / "log").exists() and (vol_dir / "log").read_text())
        assert len(lines.split()) == 1, lines  # one writer, ever
    finally:
        sw.manager.docker("service", "rm", svc, check=False)
    _drain_and_remove(sw, vol)


def _task_states(sw: Swarm, svc: str) -> list[str]:
    """``state|error|node`` of each task of ``svc`` that should be running."""
    return sw.manager.docker(
        "service", "ps", svc, "--filter", "desired-state=running",
        "--format", "{{.CurrentState}}|{{.Error}}|{{.Node}}",
    ).stdout.splitlines()  # fmt: skip


def _volume_dirs_named(sw: Swarm, vol: str) -> list[Path]:
    """The directory of cluster volume ``vol`` on the shared root (its CSI volume ID's key)."""
    vid = volume_field(sw.manager, vol, "{{.ClusterVolume.Info.VolumeID}}")
    return [p for p in _volume_dirs(sw) if vid and vid in p.name] or [
        p for p in _volume_dirs(sw) if vol in p.name
    ]


def _plugin_pids(node: str, driver: str) -> list[int]:
    """Host PIDs of the dockvol processes serving ``driver`` for swarm node ``node``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if (
            b"dockvol" in cmd
            and f"DOCKVOL_NODE={node}".encode() in env
            and f"DOCKVOL_DRIVER={driver}".encode() in env
        ):
            pids.append(int(proc.name))
    return pids


def _mounts_of(directory: Path, mountinfo: Path) -> list[str]:
    """Mount points in ``mountinfo`` whose source is ``directory`` (binds of the volume)."""
    out = []
    for line in mountinfo.read_text().splitlines():
        fields = line.split()
        if fields[3] == str(directory) or fields[3].endswith(f"/{directory.name}"):
            out.append(fields[4])
    return out


def test_kill_9_in_the_middle_of_a_publish_loses_nothing_and_mounts_once(swarm: Swarm) -> None:
    """The worker's plugin is killed inside NodePublish, in the driver's mount (held open by
    the gated driver; dockvol does not advertise staging to Swarm, docs/csi.md); the engine
    restarts it, Swarm retries, the task runs with the data there, and the volume is mounted
    exactly once for it."""
    sw = swarm
    sw.wait_csi_reported()
    vol, svc = f"k9{uuid.uuid4().hex[:6]}", f"svc{uuid.uuid4().hex[:6]}"
    _create_volume(sw, vol, GATED, "single", "none")
    (vol_dir,) = wait_for(lambda: _volume_dirs_named(sw, vol), what="the volume's directory")
    (vol_dir / "before").write_text("written before the kill\n")
    gate, entered = sw.shared / ".gate", sw.shared / ".entered"
    gate.touch()
    (old,) = _plugin_pids("node-w", GATED_DRIVER)
    # The worker engine's own mount namespace: what the engine (and containers) see.
    engine_mounts = Path(f"/proc/{int(sw.worker.pidfile.read_text())}/mountinfo")
    sw.manager.docker(
        "service", "create", "--detach", "--no-resolve-image", "--name", svc,
        "--stop-grace-period", "1s", "--constraint", f"node.id=={sw.node_id(sw.worker)}",
        "--mount", f"type=cluster,source={vol},target=/d",
        BUSYBOX_IMAGE, "sh", "-c", "cat /d/before > /d/seen; echo $(hostname) >> /d/log; sleep 300",
    )  # fmt: skip
    try:
        wait_for(lambda: entered.exists(), timeout=180, what=f"the mount entered\n{sw.logs()}")
        assert entered.read_text() == "node-w"
        os.kill(old, signal.SIGKILL)
        gate.unlink()
        new = wait_for(
            lambda: [p for p in _plugin_pids("node-w", GATED_DRIVER) if p != old],
            timeout=60,
            what="the engine restarting the killed plugin",
        )
        wait_for(
            lambda: _running_on(sw, svc) == [sw.node_id(sw.worker)],
            timeout=180,
            what=f"the task running after the kill\n{sw.logs()}",
        )
        wait_for(lambda: (vol_dir / "seen").exists(), what="the task's read")
        assert (vol_dir / "seen").read_text() == "written before the kill\n"
        assert len((vol_dir / "log").read_text().split()) == 1  # the task started once
        # Inside the restarted plugin: the one publish bind of the volume.
        inside = _mounts_of(vol_dir, Path(f"/proc/{new[0]}/mountinfo"))
        assert len(inside) == 1 and inside[0].startswith("/data/published/"), inside
        # Every bind of the volume the engine sees is that one publish target. The engine's
        # table lists it twice: its bind of the plugin's propagated-mount directory onto itself
        # shares a peer group with the mount beneath it, so the plugin's one bind propagates to
        # both (the second hidden under the first); the plugin's unmount takes both away.
        (target,) = set(_mounts_of(vol_dir, engine_mounts))
        assert "/propagated-mount/" in target and target.endswith(inside[0].rsplit("/", 1)[1])
    finally:
        gate.unlink(missing_ok=True)
        sw.manager.docker("service", "rm", svc, check=False)
    _drain_and_remove(sw, vol)
    assert _mounts_of(vol_dir, engine_mounts) == []  # no bind of the volume outlives it
    wait_for(lambda: not vol_dir.exists(), timeout=30, what="the volume's directory deleted")
