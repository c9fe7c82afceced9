"""``kill -9`` of the plugin while it is inside the driver, then a restart: the state is whole.

Each test blocks one driver operation (tests/engine/slowdriver.py), kills the plugin while the
operation is provably in progress, restarts it and checks what the engine would see next: the
volume either exists and works completely, or does not exist at all, and no mount record is
left that the engine will never release.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

from tests.support.plugin import Plugin, call

from . import slowdriver
from ._util import wait_until

MID = "d" * 64


def _blocked_call(p: Plugin, endpoint: str, body: dict[str, Any], op: str) -> threading.Thread:
    """Send ``endpoint`` in a thread and return once the driver is blocked inside ``op``."""

    def send() -> None:
        # The plugin is killed under this request: the engine sees a transport error.
        with contextlib.suppress(OSError):
            call(p.sock, endpoint, body, timeout=60)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    want = f"{op} {body['Name']}"
    wait_until(f"{want} to block in the driver", lambda: slowdriver.entered(p.root) == want)
    return t


def _crash_and_restart(p: Plugin, t: threading.Thread) -> None:
    p.kill()
    t.join(30)
    assert not t.is_alive()
    p.launch()


def _volume_dirs(p: Plugin) -> list[Path]:
    """Volume directories under the root. The local driver's ``.trash`` (removed volumes' data,
    deleted just after the reply and swept at start) must empty itself; it is no volume."""
    trash = p.root / ".trash"
    wait_until("the trash to empty", lambda: not trash.exists() or not any(trash.iterdir()))
    return sorted(x for x in p.root.iterdir() if x.is_dir() and x != trash)


def test_kill_inside_create(slow_plugin: Plugin) -> None:
    p = slow_plugin
    opts = {"block": "create", "mode": "0700"}
    t = _blocked_call(p, "VolumeDriver.Create", {"Name": "v", "Opts": opts}, "create")
    _crash_and_restart(p, t)

    code, reply = p.call("VolumeDriver.Get", {"Name": "v"})
    assert code == 200
    if "Err" in reply:  # forgotten entirely: nothing may be left on disk
        assert _volume_dirs(p) == []
    else:  # kept: it must be complete and usable
        assert reply["Volume"]["Status"]["options"] == opts
    # The engine retries the Create with the same options: it succeeds either way.
    assert p.call("VolumeDriver.Create", {"Name": "v", "Opts": opts}) == (200, {})
    code, reply = p.call("VolumeDriver.Mount", {"Name": "v", "ID": MID})
    mp = Path(reply["Mountpoint"])
    assert mp.is_dir() and mp.parent == p.root
    assert p.call("VolumeDriver.Unmount", {"Name": "v", "ID": MID}) == (200, {})
    assert p.call("VolumeDriver.Remove", {"Name": "v"}) == (200, {})
    assert _volume_dirs(p) == []


def test_kill_inside_first_mount_leaves_no_mount_record(slow_plugin: Plugin) -> None:
    p = slow_plugin
    assert p.call("VolumeDriver.Create", {"Name": "v", "Opts": {"block": "mount"}}) == (200, {})
    t = _blocked_call(p, "VolumeDriver.Mount", {"Name": "v", "ID": MID}, "mount")
    _crash_and_restart(p, t)

    # The engine saw this Mount fail, so it will never send an Unmount for it: a record
    # here would keep the volume "in use" forever.
    _, reply = p.call("VolumeDriver.Get", {"Name": "v"})
    st = reply["Volume"]["Status"]
    assert st["mounts"] == 0 and st["mount_ids"] == [], st
    assert p.call("VolumeDriver.Remove", {"Name": "v"}) == (200, {})
    assert _volume_dirs(p) == []


def test_kill_inside_last_unmount_releases_the_volume(slow_plugin: Plugin) -> None:
    p = slow_plugin
    assert p.call("VolumeDriver.Create", {"Name": "v", "Opts": {"block": "unmount"}}) == (200, {})
    code, reply = p.call("VolumeDriver.Mount", {"Name": "v", "ID": MID})
    assert code == 200 and "Mountpoint" in reply, reply
    t = _blocked_call(p, "VolumeDriver.Unmount", {"Name": "v", "ID": MID}, "unmount")
    _crash_and_restart(p, t)

    # Whether or not the engine's retry comes, the volume must not stay "in use".
    assert p.call("VolumeDriver.Unmount", {"Name": "v", "ID": MID}) == (200, {})
    _, reply = p.call("VolumeDriver.Get", {"Name": "v"})
    st = reply["Volume"]["Status"]
    assert st["mounts"] == 0 and st["mount_ids"] == [], st
    assert p.call("VolumeDriver.Remove", {"Name": "v"}) == (200, {})


def test_kill_inside_remove_keeps_the_volume_whole(slow_plugin: Plugin) -> None:
    p = slow_plugin
    assert p.call("VolumeDriver.Create", {"Name": "v", "Opts": {"block": "remove"}}) == (200, {})
    code, reply = p.call("VolumeDriver.Mount", {"Name": "v", "ID": MID})
    (Path(reply["Mountpoint"]) / "data").write_text("still here\n")
    assert p.call("VolumeDriver.Unmount", {"Name": "v", "ID": MID}) == (200, {})
    t = _blocked_call(p, "VolumeDriver.Remove", {"Name": "v"}, "remove")
    _crash_and_restart(p, t)

    code, reply = p.call("VolumeDriver.Get", {"Name": "v"})
    assert code == 200 and "Err" not in reply, "the volume vanished while its data is on disk"
    code, reply = p.call("VolumeDriver.Mount", {"Name": "v", "ID": MID})
    assert (Path(reply["Mountpoint"]) / "data").read_text() == "still here\n"
    assert p.call("VolumeDriver.Unmount", {"Name": "v", "ID": MID}) == (200, {})
    # The engine's retried Remove then completes.
    assert p.call("VolumeDriver.Remove", {"Name": "v"}) == (200, {})
    code, reply = p.call("VolumeDriver.Get", {"Name": "v"})
    assert reply.get("Err")
    assert _volume_dirs(p) == []
