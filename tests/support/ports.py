"""Free loopback ports for the tests' listeners: etcd members, metrics, swarm managers."""

from __future__ import annotations

import random
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (when asked)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def swarm_data_path_port() -> int:
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
