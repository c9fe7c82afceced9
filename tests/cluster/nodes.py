"""Cluster "nodes" for engine tests: a private Docker engine plus its own ``dockvol serve``.

Each node's plugin reaches etcd through its own :class:`CutProxy` per member, so a test can cut
one node off etcd (``node.cut()``) while the others keep talking to it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from dockvol.drivers.block import loop
from tests.support.engine import Engine
from tests.support.plugin import Plugin

from .etcd import CutProxy, EtcdCluster

DRIVER = "shared"  # the plugin's name for the engines: docker volume create -d shared

N = TypeVar("N")


@dataclass
class Node:
    name: str
    engine: Engine
    shared_root: Path
    etcd_url: str
    ttl: float
    proxies: list[CutProxy] = field(default_factory=list)
    plugin: Plugin | None = None

    @property
    def sock(self) -> Path:
        return self.engine.plugins_dir / f"{DRIVER}.sock"

    @property
    def state(self) -> Path:
        return self.engine.dir / "dvstate"

    def start_plugin(self) -> Plugin:
        self.plugin = Plugin.start(
            self.sock, self.shared_root, self.state,
            "--driver", "shared", "--name", DRIVER, "--registry", self.etcd_url,
            "--node", self.name, "--lease-ttl", str(self.ttl), "--log-level", "debug",
        )  # fmt: skip
        return self.plugin

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.engine.docker(*args, check=check)

    def cut(self) -> None:
        for p in self.proxies:
            p.cut()

    def heal(self) -> None:
        for p in self.proxies:
            p.heal()

    def kill(self) -> None:
        """Node death: SIGKILL the plugin, the containers, the engine and its containerd."""
        if self.plugin is not None and self.plugin.proc is not None:
            self.plugin.kill()
        pids = []
        for cid in self.docker("ps", "-q", check=False).stdout.split():
            r = self.docker("inspect", "-f", "{{.State.Pid}}", cid, check=False)
            if r.stdout.strip().isdigit():
                pids.append(int(r.stdout.strip()))
        proc = self.engine.proc
        if proc is not None:
            # Every process left in the engine's mount namespace (dockerd, containerd, shims).
            ns = _mnt_ns(proc.pid)
            if ns is not None and ns != _mnt_ns(os.getpid()):  # never sweep the host's namespace
                pids += [p for p in _pids() if _mnt_ns(p) == ns]
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if proc is not None:
            proc.wait()

    def stop(self) -> None:
        if self.plugin is not None:
            self.plugin.stop()
        self.engine.stop()
        for p in self.proxies:
            p.close()


def start_node(name: str, etcd: EtcdCluster, shared_root: Path, ttl: float) -> Node:
    engine = Engine.start()
    proxies = [CutProxy(e) for e in etcd.endpoints]
    url = "etcd://" + ",".join(p.endpoint for p in proxies)
    node = Node(name, engine, shared_root, url, ttl, proxies)
    try:
        engine.ensure_busybox()
        node.start_plugin()
    except BaseException:
        node.stop()
        raise
    return node


def block_root(prefix: str) -> Iterator[Path]:
    """A root under /tmp shared by the nodes' block volumes; at the end the loop devices left
    on it are detached (failing the test) and it is removed."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    (d / "root").mkdir()
    yield d / "root"
    leaked = loop.under(d)
    for lp in leaked:  # never leave a device behind, even after a failure
        loop.detach(lp.device, lp.backing)
    shutil.rmtree(d, ignore_errors=True)
    assert not leaked, f"loop devices left on the shared root: {leaked}"


def start_all(
    start: Callable[[str], N], names: Sequence[str]
) -> tuple[dict[str, N], list[Exception]]:
    """Start the nodes ``names`` at once: (those that started, the errors of the others)."""
    started: dict[str, N] = {}
    errors: list[Exception] = []
    with ThreadPoolExecutor(len(names)) as pool:
        futures = {n: pool.submit(start, n) for n in names}
        for n, f in futures.items():
            try:
                started[n] = f.result()
            except Exception as exc:  # start the rest, then fail (never skip)
                errors.append(exc)
    return started, errors


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _mnt_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def lines(text: str) -> dict[int, float]:
    """A fencing test's writer output, ``TIME NUMBER`` per line: number -> its time."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[int(parts[1])] = float(parts[0])
    return out
