"""Fixtures for managed-plugin tests: a private engine with a Debian base image (debootstrap,
cached between runs, see base.py) and a loopback registry (Debian's docker-registry).

Engines and registries that cannot start raise: the tests fail, never skip.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packaging.base import base_tarball
from tests.support.engine import Engine

BASE_IMAGE = "dockvol-test-base:bookworm"


@pytest.fixture(scope="session")
def base_tar() -> Path:
    return base_tarball()


@pytest.fixture(scope="module")
def engine(base_tar: Path) -> Iterator[Engine]:
    eng = Engine.start()
    try:
        eng.ensure_busybox()
        eng.docker("import", str(base_tar), BASE_IMAGE, timeout=600)
        yield eng
    finally:
        # Volumes first, through their plugins (block detaches its loop devices), then plugins.
        for cid in eng.docker("ps", "-aq", check=False).stdout.split():
            eng.docker("rm", "-f", cid, check=False)
        for vol in eng.docker("volume", "ls", "-q", check=False).stdout.split():
            eng.docker("volume", "rm", "-f", vol, check=False)
        for name in eng.docker("plugin", "ls", "-q", check=False).stdout.split():
            eng.docker("plugin", "disable", "-f", name, check=False)
        base = eng.dir
        eng.stop()
        _detach_loops_under(base)


def _detach_loops_under(base: Path) -> None:
    """Loop devices a failed test left attached to images under ``base``."""
    out = subprocess.run(
        ["losetup", "-l", "-n", "-O", "NAME,BACK-FILE"], capture_output=True, text=True
    ).stdout
    for line in out.splitlines():
        dev, _, back = line.strip().partition(" ")
        if back.strip().startswith(str(base)):
            subprocess.run(["losetup", "-d", dev], capture_output=True)


class Registry:
    """``docker-registry serve`` on 127.0.0.1 with a throwaway config and storage."""

    def __init__(self) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            raise RuntimeError("docker-registry not found: apt-get install -y docker-registry")
        self.dir = Path(tempfile.mkdtemp(prefix="dvreg", dir="/tmp"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        config = self.dir / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {self.dir}/data\nhttp:\n  addr: {self.address}\n"
        )
        self.log = self.dir / "registry.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited:\n{self.log.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return
            time.sleep(0.05)  # polling for readiness
        self.stop()
        raise RuntimeError(f"docker-registry did not listen on {self.address}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    reg = Registry()
    try:
        yield reg
    finally:
        reg.stop()


def dockvol(
    engine: Engine, *args: str, timeout: float = 900, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The real CLI, as a user runs it, against the test engine."""
    return subprocess.run(
        [sys.executable, "-m", "dockvol", *args, "-H", f"unix://{engine.sock}"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
