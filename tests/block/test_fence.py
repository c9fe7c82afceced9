"""Fencing a mounted block volume (issue 15, the driver's part) against the real kernel (root):
a writer on this node gets an error at once, what it had fsync'ed is on the image, and a second
node (another driver on the same shared root) mounts the image without a manual repair."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockvol import DriverError, HostContext, Volume
from dockvol.drivers.block import BlockDriver, fscrypt, loop, mounttable
from dockvol.drivers.block.fence import GOING_FLAGS_DEFAULT, IOC_SHUTDOWN

from .conftest import Holder, MakeVolume, wait_for
from .test_encryption import Make, encrypted, header, make, secrets_dir  # noqa: F401 (fixtures)

# A writer as an application would be: append a line, fsync it, say so; stop at the first error.
WRITER = r"""
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
deadline = time.monotonic() + 60
n = 0
while time.monotonic() < deadline:
    try:
        os.write(fd, b"line %d\n" % n)
        os.fsync(fd)
    except OSError as exc:
        print(f"error {exc.errno}", flush=True)
        sys.exit(0)
    print(f"durable {n}", flush=True)
    n += 1
print("no error", flush=True)
"""


def node(root: Path, name: str) -> BlockDriver:
    """A node of a cluster on the shared ``root`` (nodes share this kernel in the tests)."""
    root.mkdir(exist_ok=True)
    d = BlockDriver(
        root,
        HostContext(
            plugin="blk", node=name, local_dir=root.parent / f"node-{name}", shared_root=True
        ),
    )
    d.setup()
    return d


class Writer:
    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []

    def wait_durable(self, n: int) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())
            if line.strip() == f"durable {n}":
                return
        raise AssertionError(f"the writer stopped early: {self.lines[-3:]}")

    def finish(self) -> tuple[int, str]:
        """The last line it made durable, and how it stopped."""
        out, _ = self.proc.communicate(timeout=90)
        self.lines += out.split("\n")
        durable = [int(x.split()[1]) for x in self.lines if x.startswith("durable ")]
        end = next(x for x in self.lines if x.startswith(("error", "no error")))
        return durable[-1], end

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def writers() -> Iterator[list[Writer]]:
    made: list[Writer] = []
    yield made
    for w in made:
        w.kill()


def assert_lines(text: str, last: int) -> None:
    """Every line up to ``last`` is there, in order (lines after it may be, or not)."""
    lines = text.splitlines()
    assert lines[: last + 1] == [f"line {i}" for i in range(last + 1)], lines[-3:]


def check_clean(fs: str, image: Path) -> None:
    args = ["e2fsck", "-f", "-n", str(image)] if fs == "ext4" else ["xfs_repair", "-n", str(image)]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_ioctl_is_ext4s_and_xfss_shutdown_after_a_freeze() -> None:
    # _IOR('X', 125, __u32): EXT4_IOC_SHUTDOWN (linux/ext4.h), XFS_IOC_GOINGDOWN (xfs_fs.h);
    # flag 0: EXT4_GOING_FLAGS_DEFAULT / XFS_FSOP_GOING_FLAGS_DEFAULT (freeze, shut down, thaw).
    assert IOC_SHUTDOWN == 0x8004587D and GOING_FLAGS_DEFAULT == 0


@pytest.mark.parametrize(("fs", "size"), [("ext4", "64M"), ("xfs", "300M")])
def test_fence_stops_the_writer_and_the_next_node_gets_every_fsynced_line(
    root: Path, make_volume: MakeVolume, writers: list[Writer], fs: str, size: str
) -> None:
    a = node(root, "a")
    vol = make_volume(f"fenced-{fs}", size=size, fs=fs)
    a.create(vol)
    mp = a.mount(vol)
    writer = Writer(mp / "log")
    writers.append(writer)
    writer.wait_durable(20)

    assert a.fence(vol, mp) is True
    last, end = writer.finish()
    assert end in (f"error {errno.EIO}", f"error {errno.EROFS}"), end
    assert a.status(vol, mp)["fenced"] is True
    with pytest.raises(DriverError, match=r"was fenced on this node.*restart the containers"):
        a.mount(vol)
    assert a.fence(vol, mp) is True  # again: nothing left to do, still fenced
    a.unmount(vol)  # the engine's Unmount when the container stops: nothing to release
    # The writer is gone: nothing holds the filesystem, the loop device frees itself.
    image = a.image_path(vol)
    wait_for("the fenced loop device to be freed", lambda: not loop.backing(image))

    b = node(root, "b")
    served = b.mount(vol)
    try:
        assert_lines((served / "log").read_text(), last)
    finally:
        b.unmount(vol)
    check_clean(fs, image)  # the takeover needed no manual repair, and left none to do
    b.remove(vol)


def test_fence_removes_the_key_of_an_encrypted_volume(
    root: Path,
    make: Make,  # noqa: F811 (the fixture)
    writers: list[Writer],
) -> None:
    a = node(root, "a")
    vol: Volume = encrypted(make, "secret-fenced")
    a.create(vol)
    served = a.mount(vol)
    ident = header(a, vol).identifier
    # A handle on the filesystem that outlives our mount (as a container's would).
    fs_root = os.open(a.mountpoint(vol), os.O_RDONLY | os.O_DIRECTORY)
    try:
        writer = Writer(served / "log")
        writers.append(writer)
        writer.wait_durable(5)
        assert fscrypt.key_status_of(fs_root, ident) == (fscrypt.KEY_STATUS_PRESENT)
        assert a.fence(vol, a.mountpoint(vol)) is True
        last, end = writer.finish()
        assert end.startswith("error"), end
        assert fscrypt.key_status_of(fs_root, ident) != (fscrypt.KEY_STATUS_PRESENT)
    finally:
        os.close(fs_root)
    wait_for("the fenced loop device to be freed", lambda: not loop.backing(a.image_path(vol)))
    b = node(root, "b")
    served_b = b.mount(vol)  # unlocks again from the secret
    try:
        assert_lines((served_b / "log").read_text(), last)
    finally:
        b.unmount(vol)
    check_clean("ext4", b.image_path(vol))
    b.remove(vol)


def test_fence_of_a_volume_not_mounted_here_is_a_no_op(root: Path, make_volume: MakeVolume) -> None:
    a = node(root, "a")
    vol = make_volume("idle", size="32M")
    a.create(vol)
    assert a.fence(vol, a.mountpoint(vol)) is True
    assert loop.backing(a.image_path(vol)) == []
    a.remove(vol)


def test_a_fenced_volume_a_container_still_holds_is_freed_when_it_goes(
    root: Path, make_volume: MakeVolume, namespace_holder: Holder
) -> None:
    """A container's copy of the mount keeps the shut-down filesystem alive: our mount goes at
    once, the loop device is freed by the kernel (autoclear) when the container does."""
    a = node(root, "a")
    vol = make_volume("held", size="32M")
    a.create(vol)
    mp = a.mount(vol)
    (mp / "kept").write_text("before the fence")
    container = namespace_holder()
    in_container = ["nsenter", "-t", str(container.pid), "-m", "--"]
    assert a.fence(vol, mp) is True
    assert mounttable.mounted_at(mp) is None
    write = subprocess.run([*in_container, "touch", str(mp / "after")], capture_output=True)
    assert write.returncode != 0 and b"Input/output error" in write.stderr, write
    assert loop.backing(a.image_path(vol)), "still held by the container's copy"
    container.kill()
    container.wait()
    wait_for("the loop device to be freed", lambda: not loop.backing(a.image_path(vol)))
    b = node(root, "b")
    try:
        assert (b.mount(vol) / "kept").read_text() == "before the fence"
    finally:
        b.unmount(vol)
    b.remove(vol)


def test_a_mount_racing_a_fence_is_fenced_too(
    root: Path, make_volume: MakeVolume, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fence may run on any thread: a Mount that was attaching meanwhile must not leave a live,
    writable mount behind."""
    a = node(root, "a")
    vol = make_volume("racing", size="32M")
    a.create(vol)
    attach = a._attacher.attach_and_mount

    def attach_then_fenced(volume: Volume, **kw: bool) -> object:
        att = attach(volume, **kw)
        with a._state.lock:  # the fence arrives now, on another thread: it sees no attachment yet
            a._state.fenced[volume.key] = "fenced while attaching"
        return att

    monkeypatch.setattr(a._attacher, "attach_and_mount", attach_then_fenced)
    with pytest.raises(DriverError, match="was fenced on this node"):
        a.mount(vol)
    assert mounttable.mounted_at(a.mountpoint(vol)) is None
    wait_for("the loop device to be freed", lambda: not loop.backing(a.image_path(vol)))
    a.remove(vol)
