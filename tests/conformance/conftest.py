"""Fixtures: the stub plugin (correct or with one defect) as a real process on a unix socket."""

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

from dockvol.testing import WireClient, peer_pid, wait_ready

STUB = Path(__file__).with_name("stubplugin.py")


class Stub:
    """One stub plugin process; ``command`` restarts it on the same socket and state."""

    def __init__(self, directory: Path, defect: str = "") -> None:
        self.dir = directory
        self.sock = directory / "stub.sock"
        self.defect = defect
        args = [
            sys.executable,
            str(STUB),
            "--socket",
            str(self.sock),
            "--state",
            str(directory / "state.json"),
            "--root",
            str(directory / "root"),
        ]
        if defect:
            args += ["--defect", defect]
        self.args = args
        self.command = shlex.join(args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def client(self) -> WireClient:
        return WireClient(str(self.sock))

    def start(self) -> Stub:
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL)
        wait_ready(self.client, 20)
        return self

    def stop(self) -> None:
        """Stop whichever process now serves the socket (a restart may have replaced ours)."""
        if self.sock.exists():
            try:
                pid = peer_pid(self.sock)
                os.kill(pid, signal.SIGTERM)
                _wait_gone(pid)
            except OSError:
                pass
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(10)


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:  # our own child: reap it
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.02)  # polling for the process to exit
    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short temporary directory (unix socket paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="dvc") as d:
        yield Path(d)


@pytest.fixture
def stub(short_dir: Path) -> Iterator[Stub]:
    s = Stub(short_dir).start()
    try:
        yield s
    finally:
        s.stop()
