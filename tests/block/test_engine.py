"""The block driver through a real private Docker engine (see ../../shared/ENGINE.md).

One engine and one ``dockvol serve --driver block`` per module. The plugin runs inside the
engine's mount namespace (``engine.enter_args()``): the engine's namespace is private, so mounts
made outside it after it started would be invisible to it and its containers.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dockvol._service.names import volume_key
from dockvol.drivers.block import loop, mounttable
from tests.support.engine import BUSYBOX_IMAGE, Engine
from tests.support.plugin import Plugin

from .conftest import BASE_PREFIX, release_engine_plugin, reserve

pytestmark = pytest.mark.engine

DRIVER = "block"
MiB = 1 << 20
T = TypeVar("T")


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=Path(BASE_PREFIX).name, dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def engine(base: Path) -> Iterator[Engine]:
    eng = Engine.start()
    try:
        eng.ensure_busybox()
        yield eng
    finally:
        eng.stop()


@pytest.fixture(scope="module")
def plugin(engine: Engine, base: Path) -> Iterator[Plugin]:
    p = Plugin.start(
        engine.plugins_dir / f"{DRIVER}.sock",
        base / "root",
        base / "state" / "db",
        "--driver",
        DRIVER,
        name=DRIVER,
        wrap=engine.enter_args(),
    )
    try:
        yield p
    finally:
        release_engine_plugin(engine, p, base, DRIVER)


# -- helpers -------------------------------------------------------------------------------------
def wait_until(what: str, probe: Callable[[], T], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)  # polling a condition


def status(engine: Engine, volume: str) -> dict[str, Any]:
    [info] = json.loads(engine.docker("volume", "inspect", volume).stdout)
    st = info["Status"]
    assert isinstance(st, dict), info
    return st


def image(plugin: Plugin, volume: str) -> Path:
    return plugin.root / "images" / f"{volume_key(volume)}.img"


def loops_of(plugin: Plugin, volume: str) -> list[str]:
    return [lp.device for lp in loop.backing(image(plugin, volume))]


def plugin_mounts(plugin: Plugin) -> list[str]:
    """Mounts under the plugin's root, as the plugin (in the engine's namespace) sees them."""
    assert plugin.proc is not None
    prefix = str(plugin.root) + "/"
    entries = mounttable.read(Path(f"/proc/{plugin.proc.pid}/mountinfo"))
    return [e.target for e in entries if e.target.startswith(prefix)]


def detached(plugin: Plugin, volume: str) -> bool:
    return not loops_of(plugin, volume) and not plugin_mounts(plugin)


def create(engine: Engine, volume: str, **opts: str) -> None:
    args = [a for k, v in opts.items() for a in ("-o", f"{k}={v}")]
    engine.docker("volume", "create", "-d", DRIVER, *args, volume)


def run(engine: Engine, volume: str, script: str, check: bool = True) -> str:
    r = engine.docker(
        "run", "--rm", "--network", "none", "-v", f"{volume}:/d", BUSYBOX_IMAGE, "sh", "-c",
        script, check=check,
    )  # fmt: skip
    return r.stdout + r.stderr


def run_detached(engine: Engine, containers: list[str], name: str, volume: str) -> None:
    containers.append(name)
    engine.docker(
        "run", "-d", "--name", name, "--network", "none", "-v", f"{volume}:/d", BUSYBOX_IMAGE,
        "sleep", "600",
    )  # fmt: skip


def df_bytes(text: str) -> int:
    """Total size from busybox ``df -k /d`` output."""
    line = text.strip().splitlines()[-1].split()
    return int(line[1]) * 1024


def resize(plugin: Plugin, volume: str, size: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dockvol", "volume", "resize", "--socket", str(plugin.sock), volume, size],
        capture_output=True, text=True, timeout=150,
    )  # fmt: skip


# -- tests ---------------------------------------------------------------------------------------
def test_create_with_size_makes_a_sparse_detached_volume(engine: Engine, plugin: Plugin) -> None:
    create(engine, "sized", size="64M")
    st = status(engine, "sized")
    assert st["size"] == 64 * MiB and st["fs"] == "ext4" and st["attached"] is False
    img = image(plugin, "sized")
    # The image is the size plus the filesystem's overhead; sparse: only metadata is written.
    assert 64 * MiB < img.stat().st_size < 80 * MiB and img.stat().st_blocks * 512 < 64 * MiB
    assert loops_of(plugin, "sized") == []


def mib_copied(text: str) -> int:
    """The whole MiB busybox ``dd bs=1M`` says it wrote ("N+M records out")."""
    m = re.search(r"(\d+)\+\d+ records out", text)
    assert m is not None, text
    return int(m.group(1)) * MiB


@pytest.mark.parametrize(("fs", "size_mib"), [("ext4", 64), ("xfs", 300)])
def test_df_shows_the_size_and_a_container_fills_it_to_enospc(
    engine: Engine, plugin: Plugin, fs: str, size_mib: int
) -> None:
    """docs/block.md: df inside the container shows the size (at most 1% more); a container
    writes all of it but the filesystem's own reserve; then ENOSPC."""
    vol = f"full-{fs}"
    create(engine, vol, size=f"{size_mib}M", fs=fs)
    image_size = image(plugin, vol).stat().st_size
    out = run(
        engine, vol,
        f"df -k /d; dd if=/dev/zero of=/d/big bs=1M count={size_mib + 64}; echo dd=$?",
        check=False,
    )  # fmt: skip
    assert "No space left on device" in out, out
    assert re.search(r"dd=[1-9]", out), out
    shown = df_bytes("\n".join(out.splitlines()[:2]))  # df ran first
    assert size_mib * MiB <= shown <= size_mib * MiB * 1.01, out
    assert mib_copied(out) >= size_mib * MiB - reserve(fs, size_mib * MiB), out
    assert image(plugin, vol).stat().st_size == image_size  # the host file did not grow
    wait_until("the volume to be detached", lambda: detached(plugin, vol))
    assert status(engine, vol)["fs"] == fs


def test_data_survives_container_restarts(
    engine: Engine, plugin: Plugin, containers: list[str]
) -> None:
    create(engine, "persist", size="64M")
    containers.append("restarter")
    engine.docker(
        "create", "--name", "restarter", "--network", "none", "-v", "persist:/d", BUSYBOX_IMAGE,
        "sh", "-c", "echo run >> /d/log; cat /d/log",
    )  # fmt: skip
    assert engine.docker("start", "-a", "restarter").stdout.split() == ["run"]
    wait_until("the volume to be detached", lambda: detached(plugin, "persist"))
    assert engine.docker("start", "-a", "restarter").stdout.split() == ["run", "run"]
    assert run(engine, "persist", "cat /d/log").split() == ["run", "run"]


def test_owner_and_mode_survive_the_engines_copy_up(engine: Engine, plugin: Plugin) -> None:
    """Over a directory of the image, the engine copies the image's content and that directory's
    owner and mode into the empty volume; the -o uid/gid/mode must still hold in the container."""
    create(engine, "owned", size="64M", uid="1000", gid="1000", mode="0750")
    out = engine.docker(
        "run", "--rm", "--network", "none", "-v", "owned:/bin", BUSYBOX_IMAGE,
        "stat", "-c", "%u %g %a", "/bin",
    ).stdout  # fmt: skip
    assert out.split() == ["1000", "1000", "750"]
    # The copy-up really happened: busybox itself was copied into the volume.
    assert "busybox" in run(engine, "owned", "ls /d")


def test_two_containers_share_one_attachment(
    engine: Engine, plugin: Plugin, containers: list[str]
) -> None:
    create(engine, "shared", size="64M")
    run_detached(engine, containers, "share-a", "shared")
    run_detached(engine, containers, "share-b", "shared")
    [device] = loops_of(plugin, "shared")
    st = status(engine, "shared")
    assert st["attached"] is True and st["device"] == device and st["mounts"] == 2
    assert len(st["mount_ids"]) == 2 and st["fs"] == "ext4" and st["size"] == 64 * MiB
    assert st["used"] >= 0 and 0 < st["free"] <= 64 * MiB
    engine.docker("exec", "share-a", "sh", "-c", "echo from-a > /d/f")
    assert engine.docker("exec", "share-b", "cat", "/d/f").stdout == "from-a\n"
    engine.docker("rm", "-f", "share-a")
    assert loops_of(plugin, "shared") == [device]  # b still uses it
    assert engine.docker("exec", "share-b", "cat", "/d/f").stdout == "from-a\n"
    engine.docker("rm", "-f", "share-b")
    wait_until("the last unmount to detach", lambda: detached(plugin, "shared"))
    assert status(engine, "shared")["attached"] is False


def test_kill_9_with_attached_volumes_then_restart(
    engine: Engine, plugin: Plugin, containers: list[str]
) -> None:
    create(engine, "crash-a", size="64M")
    create(engine, "crash-b", size="300M", fs="xfs")
    run_detached(engine, containers, "crash-a", "crash-a")
    run_detached(engine, containers, "crash-b", "crash-b")
    before = {v: loops_of(plugin, v) for v in ("crash-a", "crash-b")}
    assert all(len(d) == 1 for d in before.values()), before
    plugin.kill()
    plugin.launch()
    # The running containers never noticed, and the plugin found its devices again.
    for v in ("crash-a", "crash-b"):
        out = engine.docker("exec", v, "sh", "-c", "echo after > /d/f && cat /d/f").stdout
        assert out == "after\n"
        assert loops_of(plugin, v) == before[v]
        st = status(engine, v)
        assert st["attached"] is True and [st["device"]] == before[v]
    engine.docker("rm", "-f", "crash-a", "crash-b")
    for v in ("crash-a", "crash-b"):
        wait_until(f"{v} to be detached", lambda v=v: not loops_of(plugin, v))
    assert plugin_mounts(plugin) == []
    assert run(engine, "crash-a", "cat /d/f") == "after\n"


def test_container_stopped_while_the_plugin_is_down_is_detached_after_restart(
    engine: Engine, plugin: Plugin, containers: list[str]
) -> None:
    """The engine retries a failed Unmount for about 15 s: a plugin back within that window gets
    it, and the last Unmount detaches the device it recovered."""
    create(engine, "downtime", size="64M")
    run_detached(engine, containers, "downtime", "downtime")
    assert len(loops_of(plugin, "downtime")) == 1
    plugin.kill()
    done: list[subprocess.CompletedProcess[str]] = []
    stopping = threading.Thread(
        target=lambda: done.append(engine.docker("stop", "-t", "0", "downtime", check=False)),
        daemon=True,
    )
    stopping.start()
    plugin.launch()
    stopping.join(60)
    assert done and done[0].returncode == 0, done
    wait_until("the volume to be detached", lambda: detached(plugin, "downtime"))
    st = status(engine, "downtime")
    assert st["attached"] is False and st["mounts"] == 0


def test_resize_detached_and_attached(
    engine: Engine, plugin: Plugin, containers: list[str]
) -> None:
    create(engine, "grow-ext4", size="64M")
    r = resize(plugin, "grow-ext4", "128M")
    assert r.returncode == 0 and "resized to 128M" in r.stdout, r.stderr
    assert df_bytes(run(engine, "grow-ext4", "df -k /d")) > 100 * MiB
    assert status(engine, "grow-ext4")["size"] == 128 * MiB

    create(engine, "grow-xfs", size="300M", fs="xfs")
    run_detached(engine, containers, "grow-xfs", "grow-xfs")
    r = resize(plugin, "grow-xfs", "600M")
    assert r.returncode == 0, r.stderr
    df = engine.docker("exec", "grow-xfs", "df", "-k", "/d").stdout
    assert df_bytes(df) > 500 * MiB  # grown under the running container

    run_detached(engine, containers, "grow-live", "grow-ext4")
    r = resize(plugin, "grow-ext4", "256M")
    if r.returncode != 0:  # online ext4 growth needs CAP_SYS_RESOURCE: it completes at next attach
        assert "CAP_SYS_RESOURCE" in r.stderr, r.stderr
        engine.docker("rm", "-f", "grow-live")
        assert df_bytes(run(engine, "grow-ext4", "df -k /d")) > 200 * MiB
    else:
        df = engine.docker("exec", "grow-live", "df", "-k", "/d").stdout
        assert df_bytes(df) > 200 * MiB


def test_shrinking_is_refused_with_a_clear_message(engine: Engine, plugin: Plugin) -> None:
    create(engine, "noshrink", size="64M")
    r = resize(plugin, "noshrink", "32M")
    assert r.returncode == 1
    assert "shrinking is not supported" in r.stderr and "64M" in r.stderr
    assert status(engine, "noshrink")["size"] == 64 * MiB


def test_any_name_is_stored_by_its_key_never_as_a_path(engine: Engine, plugin: Plugin) -> None:
    name = "a b ü .."  # ("/" would pass Create but the docker CLI cannot remove it)
    create(engine, name, size="64M")
    assert run(engine, name, "echo ok > /d/f && cat /d/f") == "ok\n"
    img = image(plugin, name)
    assert img.parent == plugin.root / "images" and img.is_file()
    assert sorted(p.name for p in plugin.root.iterdir()) == ["images", "mounts"]
    engine.docker("volume", "rm", name)
    assert not img.exists()


def test_bad_options_are_refused_at_create(engine: Engine, plugin: Plugin) -> None:
    r = engine.docker(
        "volume", "create", "-d", DRIVER, "-o", "mountopts=noatime,suid", "badopts", check=False
    )
    assert r.returncode != 0 and "not allowed" in r.stderr
    assert not image(plugin, "badopts").exists()
