"""Privilege hygiene of a running ``dockvol serve``: umask, socket, state and volume modes."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.plugin import Plugin, call


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plugin]:
    base = tmp_path_factory.mktemp("perm")
    p = Plugin.start(base / "run" / "p.sock", base / "root", base / "state" / "db")
    try:
        yield p
    finally:
        assert p.stop() == 0


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_process_umask_is_private(plugin: Plugin) -> None:
    assert plugin.proc is not None
    status = Path(f"/proc/{plugin.proc.pid}/status").read_text()
    umask = next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:"))
    assert int(umask, 8) == 0o077


def test_socket_is_0660(plugin: Plugin) -> None:
    assert stat.S_ISSOCK(os.lstat(plugin.sock).st_mode)
    assert _mode(plugin.sock) == 0o660


def test_state_is_private_after_writes(plugin: Plugin) -> None:
    assert call(plugin.sock, "VolumeDriver.Create", {"Name": "p1", "Opts": {}}) == (200, {})
    assert call(plugin.sock, "VolumeDriver.Mount", {"Name": "p1", "ID": "d" * 64})[0] == 200
    assert _mode(plugin.state) == 0o700
    files = list(plugin.state.iterdir())
    assert files  # the database, and its WAL once written
    for f in files:
        assert _mode(f) & 0o077 == 0, (f, oct(_mode(f)))


def test_volume_directory_mode_is_explicit_not_from_umask(plugin: Plugin) -> None:
    assert call(plugin.sock, "VolumeDriver.Create", {"Name": "p2", "Opts": {}}) == (200, {})
    _, reply = call(plugin.sock, "VolumeDriver.Mount", {"Name": "p2", "ID": "e" * 64})
    assert _mode(Path(reply["Mountpoint"])) == 0o755  # usable by a container's non-root user
    assert call(plugin.sock, "VolumeDriver.Create", {"Name": "p3", "Opts": {"mode": "0750"}}) == (
        200,
        {},
    )
    _, reply = call(plugin.sock, "VolumeDriver.Mount", {"Name": "p3", "ID": "e" * 64})
    assert _mode(Path(reply["Mountpoint"])) == 0o750
