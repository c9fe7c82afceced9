"""The conformance kit against ``dockvol serve --driver shared --registry etcd://...``: the
cluster registry must keep every protocol rule the single-host one keeps, crashes included."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .etcd import EtcdCluster


@pytest.fixture
def served(etcd: EtcdCluster, prefix: str) -> Iterator[tuple[Path, str]]:
    d = Path(tempfile.mkdtemp(prefix="dvcc", dir="/tmp"))
    (d / "shared").mkdir()
    sock = d / "p.sock"
    serve = [
        sys.executable, "-m", "dockvol", "serve", "--socket", str(sock),
        "--root", str(d / "shared"), "--state", str(d / "state"), "--driver", "shared",
        "--registry", etcd.url + prefix, "--node", "n1", "--lease-ttl", "3",
        "--log-level", "warning",
    ]  # fmt: skip
    # The kit restarts the plugin itself after crashing it: a command that starts it detached.
    start = f"{shlex.join(serve)} >> {d}/log 2>&1 & echo $! > {d}/pid"
    subprocess.run(start, shell=True, check=True)
    deadline = time.monotonic() + 20
    while not sock.exists():
        assert time.monotonic() < deadline, (d / "log").read_text()
        time.sleep(0.05)  # polling for readiness
    try:
        yield sock, start
    finally:
        try:
            pid = int((d / "pid").read_text())
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                time.sleep(0.05)
        except (OSError, ValueError):
            pass
        subprocess.run(["rm", "-rf", str(d)], check=False)


def test_conformance_kit_passes_with_the_etcd_registry(served: tuple[Path, str]) -> None:
    sock, start = served
    r = subprocess.run(
        [sys.executable, "-m", "dockvol", "conformance", "--socket", str(sock), "-q",
         "--destructive", "--restart-cmd", start],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "-> conformant" in r.stdout
