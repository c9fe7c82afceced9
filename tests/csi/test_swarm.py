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

import random
import re
import shutil
import socket
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

pytestmark = pytest.mark.engine

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _udp_port() -> int:
    """A free UDP port for swarm's data path, which must lie in 1024-49151."""
    for _ in range(100):
        port = random.randint(20000, 49151)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free UDP port for swarm's data path")


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
                lambda: all(_reports_csi(self.manager, i) for i in self.ids),
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
        mport, wport = _free_port(), _free_port()
        manager.docker(
            "swarm", "init", "--advertise-addr", f"127.0.0.1:{mport}",
            "--listen-addr", f"127.0.0.1:{mport}", "--data-path-port", str(_udp_port()),
        )  # fmt: skip
        token = manager.docker("swarm", "join-token", "-q", "worker").stdout.strip()
        worker.docker(
            "swarm", "join", "--token", token, "--advertise-addr", f"127.0.0.1:{wport}",
            "--listen-addr", f"127.0.0.1:{wport}", f"127.0.0.1:{mport}",
        )  # fmt: skip
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


def _reports_csi(manager: Engine, node: str) -> bool:
    out = manager.docker(
        "node", "inspect", "-f", "{{range .Description.CSIInfo}}{{.PluginName}} {{end}}", node,
        check=False,
    ).stdout  # fmt: skip
    return PLUGIN.split(":")[0] in out


def _volume_field(eng: Engine, vol: str, template: str) -> str:
    r = eng.docker("volume", "inspect", "-f", template, vol, check=False)
    return r.stdout.strip() if r.returncode == 0 else ""


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
    sw.manager.docker(
        "volume", "create", "--driver", PLUGIN, "--type", "mount", "--scope", "single",
        "--sharing", "none", "--required-bytes", "1MB", vol,
    )  # fmt: skip
    wait_for(
        lambda: _volume_field(sw.manager, vol, "{{.ClusterVolume.Info.VolumeID}}"),
        timeout=90,
        what=f"{vol} created through the CSI controller\n{sw.logs()}",
    )
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
        lambda: _volume_field(sw.manager, vol, "{{len .ClusterVolume.PublishStatus}}") in ("", "0"),
        timeout=120,
        what=f"{vol} unpublished everywhere\n{sw.logs()}",
    )
    sw.manager.docker("volume", "rm", vol)
    wait_for(
        lambda: sw.manager.docker("volume", "inspect", vol, check=False).returncode != 0,
        timeout=120,
        what=f"{vol} deleted\n{sw.logs()}",
    )


# A global service (--mode global) on such a volume stays "Preparing" on engine 28.5.2: its
# preassigned tasks never get the volume published (seen here, not investigated further); two
# replicas, one per node, use the volume on both nodes at once just the same.
def test_multi_node_volume_serves_a_task_on_every_node_at_once(swarm: Swarm) -> None:
    sw = swarm
    sw.wait_csi_reported()
    vol, svc = f"mn{uuid.uuid4().hex[:6]}", f"svc{uuid.uuid4().hex[:6]}"
    sw.manager.docker(
        "volume", "create", "--driver", PLUGIN, "--type", "mount", "--scope", "multi",
        "--sharing", "all", vol,
    )  # fmt: skip
    wait_for(
        lambda: _volume_field(sw.manager, vol, "{{.ClusterVolume.Info.VolumeID}}"),
        timeout=90,
        what=f"{vol} created\n{sw.logs()}",
    )
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
