"""Swarms of private engines on loopback, for the Docker and the CSI swarm tests."""

from __future__ import annotations

import random
import socket
import subprocess
from typing import Protocol

from tests.support.ports import free_port


class Docker(Protocol):
    """An engine, or a node holding one: what runs the docker CLI against it."""

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]: ...


def swarm_init(manager: Docker) -> str:
    """Make ``manager`` a one-node swarm on loopback: the address a worker joins."""
    addr = f"127.0.0.1:{free_port()}"
    manager.docker(
        "swarm", "init", "--advertise-addr", addr, "--listen-addr", addr,
        "--data-path-port", str(_data_path_port()),
    )  # fmt: skip
    return addr


def swarm_join(worker: Docker, manager: Docker, addr: str) -> None:
    """Join ``worker`` to the swarm that ``manager`` made at ``addr``."""
    token = manager.docker("swarm", "join-token", "-q", "worker").stdout.strip()
    own = f"127.0.0.1:{free_port()}"
    worker.docker(
        "swarm", "join", "--token", token, "--advertise-addr", own, "--listen-addr", own, addr
    )


def leave_swarm(eng: Docker) -> None:
    """Leave the swarm (if in one) and force-disable every plugin: what an engine of a swarm
    test needs before it is stopped."""
    eng.docker("swarm", "leave", "--force", check=False)
    for p in eng.docker("plugin", "ls", "-q", check=False).stdout.split():
        eng.docker("plugin", "disable", "-f", p, check=False)


def reports_csi(manager: Docker, node: str, plugin: str) -> bool:
    """Does swarm node ``node`` report CSI plugin ``plugin`` (any tag) to the swarm?"""
    out = manager.docker(
        "node", "inspect", "-f", "{{range .Description.CSIInfo}}{{.PluginName}} {{end}}", node,
        check=False,
    ).stdout  # fmt: skip
    return plugin.split(":")[0] in {name.split(":")[0] for name in out.split()}


def volume_field(eng: Docker, vol: str, template: str) -> str:
    """``docker volume inspect -f TEMPLATE`` of ``vol``, or "" when it does not exist."""
    r = eng.docker("volume", "inspect", "-f", template, vol, check=False)
    return r.stdout.strip() if r.returncode == 0 else ""


def _data_path_port() -> int:
    """A free UDP port for swarm's data path (VXLAN), which must lie in 1024-49151."""
    for _ in range(100):
        port = random.randint(20000, 49151)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free UDP port for swarm's data path")
