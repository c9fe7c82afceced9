"""Volumes of the local driver used through the docker CLI of a real private engine."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest

from tests.support.engine import Engine
from tests.support.plugin import Plugin

from ._util import inspect, run_detached, run_once, status, volume_names

pytestmark = pytest.mark.engine


def test_create_with_options_shows_in_ls_and_inspect(engine: Engine, plugin: Plugin, names) -> None:
    vol = names("v")
    out = engine.docker(
        "volume", "create", "-d", "dockvol",
        "-o", "uid=1000", "-o", "gid=1000", "-o", "mode=0750", vol,
    )  # fmt: skip
    assert out.stdout.strip() == vol

    assert vol in volume_names(engine)

    info = inspect(engine, vol)
    assert info["Name"] == vol
    assert info["Driver"] == "dockvol"
    created = datetime.fromisoformat(info["CreatedAt"])  # RFC 3339, as the plugin sent it
    assert created.tzinfo is not None
    st = info["Status"]
    assert st["mounts"] == 0
    assert st["mount_ids"] == []
    assert st["options"] == {"uid": "1000", "gid": "1000", "mode": "0750"}

    # The plugin's own Get carries CreatedAt in RFC 3339 with a timezone.
    code, reply = plugin.call("VolumeDriver.Get", {"Name": vol})
    assert code == 200 and "Err" not in reply, reply
    raw = reply["Volume"]["CreatedAt"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", raw), raw


def test_owner_and_mode_seen_from_a_container(engine: Engine, plugin: Plugin, names) -> None:
    vol = names("v")
    engine.docker(
        "volume", "create", "-d", "dockvol",
        "-o", "uid=1000", "-o", "gid=1000", "-o", "mode=0750", vol,
    )  # fmt: skip
    assert run_once(engine, vol, "stat -c '%u %g %a' /data").split() == ["1000", "1000", "750"]


def test_a_container_writes_and_a_second_reads(engine: Engine, plugin: Plugin, names) -> None:
    vol = names("v")
    engine.docker("volume", "create", "-d", "dockvol", vol)
    run_once(
        engine, vol, "echo hello-from-first > /data/msg && mkdir /data/sub && echo x > /data/sub/f"
    )
    assert run_once(engine, vol, "cat /data/msg /data/sub/f").split() == ["hello-from-first", "x"]
    assert status(engine, vol)["mounts"] == 0  # both containers gone: nothing held


def test_several_containers_at_once_and_remove_waits_for_all(
    engine: Engine, plugin: Plugin, names, containers: list[str]
) -> None:
    vol = names("v")
    engine.docker("volume", "create", "-d", "dockvol", vol)
    ctrs = [run_detached(engine, containers, names(f"c{i}"), vol) for i in range(3)]

    st = status(engine, vol)
    assert st["mounts"] == 3
    assert len(st["mount_ids"]) == 3  # one mount ID per container's mount point
    mount_ids = st["mount_ids"]

    # They share one directory: what one writes, the others read.
    engine.docker("exec", ctrs[0], "sh", "-c", "echo shared > /data/s")
    for c in ctrs[1:]:
        assert engine.docker("exec", c, "cat", "/data/s").stdout.strip() == "shared"

    # The plugin itself refuses Remove while mounted, naming the mount IDs.
    code, reply = plugin.call("VolumeDriver.Remove", {"Name": vol})
    assert code == 200
    err = reply.get("Err", "")
    assert "in use" in err, reply
    for mid in mount_ids:
        assert mid[:12] in err, (mid, err)

    for i, c in enumerate(ctrs):
        rm = engine.docker("volume", "rm", vol, check=False)
        assert rm.returncode != 0, f"volume removed while {len(ctrs) - i} container(s) use it"
        assert "in use" in rm.stderr, rm.stderr
        engine.docker("rm", "-f", c)
        assert status(engine, vol)["mounts"] == len(ctrs) - i - 1

    assert status(engine, vol)["mount_ids"] == []
    engine.docker("volume", "rm", vol)
    assert vol not in volume_names(engine)


def test_docker_cp_into_running_container(
    engine: Engine, plugin: Plugin, names, containers: list[str], tmp_path: Path
) -> None:
    vol = names("v")
    engine.docker("volume", "create", "-d", "dockvol", vol)
    c = run_detached(engine, containers, names("c"), vol)
    before = status(engine, vol)
    assert before["mounts"] == 1
    (mid,) = before["mount_ids"]

    src = tmp_path / "payload.txt"
    src.write_text("copied in\n")
    engine.docker("cp", str(src), f"{c}:/data/payload.txt")

    assert engine.docker("exec", c, "cat", "/data/payload.txt").stdout == "copied in\n"
    # docker cp mounted the volume again with the container's own mount ID: the count went
    # to 2 and back; the volume is still held exactly once by that ID.
    after = status(engine, vol)
    assert after["mounts"] == 1
    assert after["mount_ids"] == [mid]
    log = plugin.output()
    mounts_of_id = re.findall(rf"VolumeDriver\.Mount volume='{re.escape(vol)}' id={mid[:12]}", log)
    assert len(mounts_of_id) >= 2, "docker cp did not re-use the container's mount ID"

    engine.docker("stop", "-t", "0", c)
    st = status(engine, vol)
    assert st["mounts"] == 0 and st["mount_ids"] == []
    engine.docker("rm", c)
    engine.docker("volume", "rm", vol)
    assert vol not in volume_names(engine)


def test_create_is_idempotent(engine: Engine, plugin: Plugin, names) -> None:
    vol = names("v")
    for _ in range(2):
        out = engine.docker("volume", "create", "-d", "dockvol", "-o", "mode=0700", vol)
        assert out.stdout.strip() == vol
    assert volume_names(engine).count(vol) == 1

    # The engine sends Create only when Get says "not found", so a second create with other
    # options never reaches the plugin: the volume keeps its first options.
    engine.docker("volume", "create", "-d", "dockvol", "-o", "mode=0755", vol)
    assert status(engine, vol)["options"] == {"mode": "0700"}

    # On the socket: the same options again succeed, different ones get a clear error.
    code, reply = plugin.call("VolumeDriver.Create", {"Name": vol, "Opts": {"mode": "0700"}})
    assert (code, reply) == (200, {})
    code, reply = plugin.call("VolumeDriver.Create", {"Name": vol, "Opts": {"mode": "0755"}})
    assert code == 200
    err = reply.get("Err", "")
    assert "already exists with different options" in err and "mode" in err, reply


def test_on_remove_retain_keeps_data_and_logs_where(engine: Engine, plugin: Plugin, names) -> None:
    vol = names("v")
    engine.docker("volume", "create", "-d", "dockvol", "-o", "on_remove=retain", vol)
    run_once(engine, vol, "echo keep-me > /data/precious")

    engine.docker("volume", "rm", vol)
    assert vol not in volume_names(engine)
    code, reply = plugin.call("VolumeDriver.Get", {"Name": vol})
    assert code == 200 and reply.get("Err"), f"the plugin still knows {vol!r}: {reply}"

    lines = [ln for ln in plugin.output().splitlines() if repr(vol) in ln and "retained in" in ln]
    assert lines, "the plugin log does not say where the retained data is"
    m = re.search(r"retained in (/\S+)", lines[-1])
    assert m, lines[-1]
    kept = Path(m.group(1))
    assert kept.is_relative_to(plugin.root)
    assert (kept / "precious").read_text() == "keep-me\n"


def test_retained_data_created_again_stays_retained(engine: Engine, plugin: Plugin, names) -> None:
    vol = names("v")
    engine.docker("volume", "create", "-d", "dockvol", "-o", "on_remove=retain", vol)
    run_once(engine, vol, "echo keep-me > /data/precious")
    engine.docker("volume", "rm", vol)
    engine.docker("volume", "create", "-d", "dockvol", vol)  # no options this time
    assert run_once(engine, vol, "cat /data/precious").strip() == "keep-me"
    engine.docker("volume", "rm", vol)  # still retain: the data survives a second rm
    engine.docker("volume", "create", "-d", "dockvol", vol)
    assert run_once(engine, vol, "cat /data/precious").strip() == "keep-me"
    engine.docker("volume", "rm", vol)


def test_owner_and_mode_survive_the_engines_copy_up(engine: Engine, plugin: Plugin, names) -> None:
    """Mounted over a directory the image has (/tmp), the engine copies the image's content
    into the empty volume and then copies that directory's owner and mode onto the volume's
    top directory (moby copyExistingContents/copyOwnership). The owner and mode the user asked
    for with -o must still hold inside the container."""
    vol = names("v")
    engine.docker(
        "volume", "create", "-d", "dockvol",
        "-o", "uid=1000", "-o", "gid=1000", "-o", "mode=0750", vol,
    )  # fmt: skip
    out = run_once(engine, vol, "stat -c '%u %g %a' /tmp", target="/tmp")
    assert out.split() == ["1000", "1000", "750"]


def test_nocopy_keeps_owner_and_mode(engine: Engine, plugin: Plugin, names) -> None:
    vol = names("v")
    engine.docker(
        "volume", "create", "-d", "dockvol",
        "-o", "uid=1000", "-o", "gid=1000", "-o", "mode=0750", vol,
    )  # fmt: skip
    out = run_once(engine, vol, "stat -c '%u %g %a' /tmp", target="/tmp:nocopy")
    assert out.split() == ["1000", "1000", "750"]


def test_containers_started_and_removed_in_parallel_are_counted(
    engine: Engine, plugin: Plugin, names, containers: list[str]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    vol = names("v")
    engine.docker("volume", "create", "-d", "dockvol", vol)
    ctrs = [names(f"c{i}") for i in range(4)]
    with ThreadPoolExecutor(len(ctrs)) as pool:
        list(pool.map(lambda c: run_detached(engine, containers, c, vol), ctrs))
        st = status(engine, vol)
        assert st["mounts"] == len(ctrs) and len(st["mount_ids"]) == len(ctrs), st
        list(pool.map(lambda c: engine.docker("rm", "-f", c), ctrs))
    st = status(engine, vol)
    assert st["mounts"] == 0 and st["mount_ids"] == [], st
    engine.docker("volume", "rm", vol)
    assert vol not in volume_names(engine)


def test_anonymous_volume_of_run_rm_is_removed(engine: Engine, plugin: Plugin) -> None:
    before = {v["Name"] for v in plugin.call("VolumeDriver.List", {})[1]["Volumes"]}
    log_start = len(plugin.output())
    out = engine.docker(
        "run", "--rm", "--network", "none", "--volume-driver", "dockvol", "-v", "/data",
        "busybox:local", "sh", "-c", "echo anon > /data/f && cat /data/f",
    ).stdout  # fmt: skip
    assert out == "anon\n"
    log = plugin.output()[log_start:]
    made = re.findall(r"VolumeDriver\.Create volume='([0-9a-f]{64})'", log)
    assert len(made) == 1, "the anonymous volume was not created by the plugin"
    assert f"VolumeDriver.Remove volume='{made[0]}'" in log
    # run --rm removes the anonymous volume it made: the engine sent Remove to the plugin.
    after = {v["Name"] for v in plugin.call("VolumeDriver.List", {})[1]["Volumes"]}
    assert after == before
    assert not (set(volume_names(engine)) - before)
