"""Fixtures for the block driver's tests: real loop devices and mounts, always cleaned up.

Every module is wrapped by ``loops_unchanged``: the loop devices backed by files under
:data:`BASE_PREFIX` (every directory these tests create) are the same after the module as before
it. Loop devices of other programs on the machine are not ours to judge.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dockvol import Volume
from dockvol._sdk.options import parse_options
from dockvol.drivers.block import BlockDriver, loop, mounttable
from tests.support.engine import Engine
from tests.support.plugin import Plugin

#: Every temporary directory of these tests starts with this.
BASE_PREFIX = "/tmp/dvblk"


def attached_loops() -> set[tuple[str, str]]:
    return {(lp.device, lp.backing) for lp in loop.attached() if lp.backing.startswith(BASE_PREFIX)}


def cleanup_under(base: Path) -> list[str]:
    """Unmount and detach whatever of ours is left under ``base``; what was found."""
    left: list[str] = []
    prefix = str(base.resolve()) + "/"
    for e in sorted(mounttable.read(), key=lambda e: e.target, reverse=True):
        if e.target.startswith(prefix):
            left.append(f"mount {e.target}")
            subprocess.run(["umount", "-l", e.target], capture_output=True)
    for lp in loop.under(base):
        left.append(f"loop {lp.device} -> {lp.backing}")
        subprocess.run(["losetup", "-d", lp.device], capture_output=True)
    return left


@pytest.fixture(scope="module", autouse=True)
def loops_unchanged() -> Iterator[None]:
    before = attached_loops()
    yield
    after = attached_loops()
    assert after == before, f"loop devices leaked: {_explain(after - before)}"


def _explain(leaked: set[tuple[str, str]]) -> list[str]:
    """Each leaked device and who still mounts it: a program that made a mount namespace while
    a volume was mounted (another engine, on a shared machine) keeps a copy of the mount."""
    out = []
    for device, backing in sorted(leaked):
        try:
            rdev = os.stat(device).st_rdev
            pids = mounttable.other_namespaces_using(f"{os.major(rdev)}:{os.minor(rdev)}")
        except OSError:
            pids = []
        who = [_cmdline(p) for p in pids]
        out.append(f"{device} -> {backing}" + (f" (still mounted by {who})" if who else ""))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]
    except OSError:
        return str(pid)


@pytest.fixture
def root() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix=Path(BASE_PREFIX).name, dir="/tmp"))
    try:
        yield base / "root"
    finally:
        left = cleanup_under(base)
        shutil.rmtree(base, ignore_errors=True)
        assert not left, f"the test left mounts or loop devices: {left}"


@pytest.fixture
def driver(root: Path) -> BlockDriver:
    d = BlockDriver(root)
    d.setup()
    return d


MakeVolume = Callable[..., Volume]


def reserve(fs: str, size: int) -> int:
    """What a new, empty volume of ``size`` may have less free than its size (docs/block.md):
    the filesystem's own reserve for its metadata when it is nearly full, and what mkfs used."""
    if fs == "ext4":
        return min(size // 50, 16 << 20) + (1 << 20)
    return min(size // 20, 32 << 20) + size // 100 + (4 << 20)


def wait_for(what: str, condition: Callable[[], object], timeout: float = 20.0) -> None:
    """Poll ``condition`` until it is true (a condition with a deadline, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


Holder = Callable[[], "subprocess.Popen[bytes]"]


@pytest.fixture
def namespace_holder() -> Iterator[Holder]:
    """Starts processes in their own mount namespace (a copy of ours, as a container or another
    engine gets); all killed after the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        p = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sleep", "300"])
        procs.append(p)
        own = os.stat("/proc/self/ns/mnt").st_ino
        wait_for("unshare to enter its namespace", lambda: _ns(p.pid) not in (None, own))
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def _ns(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


@pytest.fixture
def make_volume() -> MakeVolume:
    """``make_volume("name", size="64M", fs="xfs")``: a volume as the framework would pass it."""

    def make(name: str, **opts: str) -> Volume:
        key = "".join(c if c.isalnum() else "_" for c in name) + "-0123456789abcdef"
        values = parse_options(BlockDriver.options, opts)
        return Volume(name, key, values, datetime.now(UTC), dict(opts))

    return make


def release_engine_plugin(engine: Engine, plugin: Plugin, base: Path, driver: str) -> None:
    """Teardown of a block plugin serving an engine: bring it back if a test killed it (the
    engine needs it to unmount and remove), remove every container and its volumes, stop it,
    and check that nothing it mounted or attached is left."""
    if plugin.proc is None or plugin.proc.poll() is not None:
        plugin.launch()
    for cid in engine.docker("ps", "-aq", check=False).stdout.split():
        engine.docker("rm", "-f", cid, check=False)
    vols = engine.docker(
        "volume", "ls", "-q", "--filter", f"driver={driver}", check=False
    ).stdout.split()
    for v in vols:
        engine.docker("volume", "rm", v, check=False)
    plugin.stop()
    left = cleanup_under(base)
    assert not left, f"the plugin left mounts or loop devices after its volumes went: {left}"


@pytest.fixture
def containers(engine: Engine) -> Iterator[list[str]]:
    """Names of containers a test made; removed after it."""
    made: list[str] = []
    yield made
    for name in reversed(made):
        engine.docker("rm", "-f", name, check=False)
