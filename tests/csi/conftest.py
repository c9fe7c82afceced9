"""A CSI plugin process (the real local driver) and gRPC clients over its unix socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from dockvol._csi import csi_pb2 as pb
from dockvol._csi import csi_pb2_grpc as pb_grpc
from tests.support.plugin import Plugin

REPO = Path(__file__).resolve().parents[2]
NODE = "node-a"


@dataclass
class CsiProcess:
    root: Path
    state: Path
    sock: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    channel: grpc.Channel | None = None

    def start(self, wait: bool = True) -> CsiProcess:
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = f"{REPO / 'src'}:{REPO}"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.csi.csiplugin", str(self.root), str(self.state),
                 f"unix://{self.sock}", NODE],
                cwd=REPO, env=env, stdout=log, stderr=log,
            )  # fmt: skip
        self.channel = grpc.insecure_channel(f"unix://{self.sock}")
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"CSI plugin exited: {self.log.read_text()[-2000:]}")
            try:
                if self.identity.Probe(pb.ProbeRequest(), timeout=2).ready.value:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"CSI plugin not ready in {timeout} s: {self.log.read_text()[-2000:]}")

    @property
    def identity(self) -> pb_grpc.IdentityStub:
        return pb_grpc.IdentityStub(self.channel)

    @property
    def controller(self) -> pb_grpc.ControllerStub:
        return pb_grpc.ControllerStub(self.channel)

    @property
    def node(self) -> pb_grpc.NodeStub:
        return pb_grpc.NodeStub(self.channel)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if self.channel is not None:
            self.channel.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.channel is not None:
            self.channel.close()


def mounts_at(path: Path) -> int:
    """How many mounts are stacked exactly at ``path`` in this mount namespace."""
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return sum(1 for line in f if line.split(" ", 5)[4] == real)


def unmount_all_under(base: Path) -> None:
    """Teardown: leave no bind mount of a test behind, whatever it did."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [line.split(" ", 5)[4] for line in f]
    for p in sorted((p for p in points if p.startswith(str(base) + "/")), reverse=True):
        subprocess.run(["umount", "-l", p], check=False)


@pytest.fixture
def csi_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # Short: unix socket paths are limited to 107 bytes.
    base = Path(tmp_path_factory.mktemp("csi", numbered=True))
    for d in ("root", "state", "node"):
        (base / d).mkdir()
    yield base
    unmount_all_under(base)


@pytest.fixture
def csi_plugin(csi_dirs: Path) -> Iterator[CsiProcess]:
    p = CsiProcess(
        csi_dirs / "root", csi_dirs / "state", csi_dirs / "csi.sock", csi_dirs / "plugin.log"
    )
    p.start()
    yield p
    p.stop()


@pytest.fixture
def block_csi(csi_dirs: Path) -> Iterator[tuple[Plugin, grpc.Channel]]:
    sock = csi_dirs / "csi.sock"
    plugin = Plugin.start(
        csi_dirs / "p.sock", csi_dirs / "root", csi_dirs / "state",
        "--driver", "block", "--csi-endpoint", f"unix://{sock}", name="dvsecret",
    )  # fmt: skip
    channel = grpc.insecure_channel(f"unix://{sock}")
    try:
        yield plugin, channel
    finally:
        channel.close()
        plugin.stop()
        out = subprocess.run(["losetup", "-l", "-n", "-O", "NAME,BACK-FILE"],
                             capture_output=True, text=True).stdout  # fmt: skip
        for line in out.splitlines():
            dev, _, back = line.strip().partition(" ")
            if back.strip().startswith(str(csi_dirs)):
                subprocess.run(["losetup", "-d", dev], check=False)
