"""Stale "in use", healed: a plugin with ``--docker-host`` releases mount records the engine gave
up on, through a real engine (20.10 and 26); and the healer's race rules, with fakes."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dockvol._engine.api import (
    BadDockerHost,
    Container,
    DockerAPI,
    EngineUnavailable,
    parse_docker_host,
)
from dockvol._engine.heal import StaleMountHealer
from dockvol._registry.memory import MemoryRegistry
from dockvol._service.service import VolumeService
from dockvol.drivers.local import LocalDriver
from tests.engine._util import run_detached, wait_until
from tests.support.engine import Engine
from tests.support.plugin import Plugin

PLUGIN = "dvheal"
EVERY = 3.0  # --heal-every: passes 0.5 s apart to confirm, the first 1.5 s after the engine


@pytest.fixture
def healing_plugin(engine: Engine) -> Iterator[Plugin]:
    base = Path(tempfile.mkdtemp(prefix="dvh", dir="/tmp"))
    p = Plugin.start(
        engine.plugins_dir / f"{PLUGIN}.sock", base / "root", base / "state" / "db",
        "--docker-host", f"unix://{engine.sock}", "--heal-every", str(EVERY),
        name=PLUGIN,
    )  # fmt: skip
    try:
        yield p
    finally:
        if p.proc is None or p.proc.poll() is not None:
            p.launch()  # the engine must be able to unmount what is left
        for cid in engine.docker("ps", "-aq", check=False).stdout.split():
            engine.docker("rm", "-f", cid, check=False)
        p.stop()
        shutil.rmtree(base, ignore_errors=True)


def mounts(plugin: Plugin, vol: str) -> list[str]:
    code, body = plugin.call("VolumeDriver.Get", {"Name": vol})
    assert code == 200 and not body.get("Err"), body
    return list(body["Volume"]["Status"].get("mount_ids", []))


@pytest.mark.engine
def test_a_record_the_engine_gave_up_on_is_released_by_the_plugin_itself(
    engine: Engine, healing_plugin: Plugin, names: Callable[[str], str], containers: list[str]
) -> None:
    stale, live = names("stale"), names("live")
    for v in (stale, live):
        engine.docker("volume", "create", "-d", PLUGIN, v)
    gone = run_detached(engine, containers, names("gone"), stale)
    run_detached(engine, containers, names("runs"), live)
    stale_id = mounts(healing_plugin, stale)
    live_ids = mounts(healing_plugin, live)
    assert len(stale_id) == 1 and len(live_ids) == 1

    # The plugin is down for all of the engine's Unmount retries: the engine gives up (the
    # container counts as running until then, exited after), and the record stays.
    healing_plugin.kill()
    engine.docker("stop", "-t", "0", gone, check=False, timeout=120)
    healing_plugin.launch()
    assert mounts(healing_plugin, stale) == stale_id, "the engine's give-up leaves the record"

    # The plugin, given the engine's API, finds it and releases it (the exited container that
    # still references the volume does not count; the running one does).
    wait_until("the stale record released", lambda: not mounts(healing_plugin, stale), 30)
    log = healing_plugin.output()
    assert f"stale mount record(s) of volume {stale!r} ({stale_id[0][:12]})" in log, log[-2000:]
    assert mounts(healing_plugin, live) == live_ids, "a running container's record is kept"
    engine.docker("rm", gone)
    engine.docker("volume", "rm", stale)  # no longer "in use"


def test_a_docker_host_that_is_not_a_unix_socket_is_refused_clearly() -> None:
    with pytest.raises(BadDockerHost, match=r"unix:///var/run/docker.sock \(TCP is not"):
        parse_docker_host("tcp://127.0.0.1:2375")
    assert parse_docker_host("unix:///run/docker.sock") == "/run/docker.sock"


# -- the race rules: the real service (local driver), a fake engine listing (fast; the engine
# test above is the real thing)
class FakeAPI(DockerAPI):
    def __init__(self) -> None:
        super().__init__("/nonexistent")
        self.listing: list[Container] = []

    def containers(self) -> list[Container]:
        return list(self.listing)


def _setup(tmp_path: Path) -> tuple[VolumeService, FakeAPI, StaleMountHealer]:
    driver = LocalDriver(tmp_path / "root")
    driver.setup()
    svc = VolumeService(driver, MemoryRegistry(), max_workers=2)
    api = FakeAPI()
    return svc, api, StaleMountHealer(svc, api, every=1, confirm_after=0, quiet=0)


def _ids(svc: VolumeService, name: str) -> dict[str, int]:
    rec = svc.registry.get(name)
    assert rec is not None
    return {i: m.count for i, m in rec.mounts.items()}


def test_a_record_is_released_only_when_seen_stale_twice_unchanged(tmp_path: Path) -> None:
    svc, api, h = _setup(tmp_path)
    api.listing = [Container("c", "c", "exited", ("v",))]

    async def body() -> None:
        await svc.create("v", {})
        await svc.mount("v", "m1")
        assert await h.check() == [] and h.suspects() == ["v"]  # first sight: suspect only
        await svc.mount("v", "m1")  # a docker start sent the same mount ID again
        assert await h.check() == [], "a changed record voids the confirmation"
        await svc.unmount("v", "m1")
        assert await h.check() == []
        assert await h.check() == ["v"]
        assert _ids(svc, "v") == {}

    asyncio.run(body())
    assert h.released == [("v", ("m1",))]


def test_a_mount_between_the_last_pass_and_the_release_wins(tmp_path: Path) -> None:
    svc, _api, _h = _setup(tmp_path)

    async def body() -> None:
        await svc.create("v", {})
        await svc.mount("v", "m1")
        # The passes saw count 1; the engine's Mount for the same ID lands just before the
        # release takes the volume's lock: nothing is released.
        assert await svc.release("v", ["m1"], expect={"m1": 2}) == []
        assert _ids(svc, "v") == {"m1": 1}
        assert await svc.release("v", ["m1"], expect={"m1": 1}) == ["m1"]

    asyncio.run(body())


@pytest.mark.parametrize("state", ["created", "running", "paused", "restarting", "removing"])
def test_a_container_in_any_state_but_exited_or_dead_keeps_the_record(
    tmp_path: Path, state: str
) -> None:
    svc, api, h = _setup(tmp_path)
    api.listing = [Container("a", "a", "exited", ("v",)), Container("b", "b", state, ("v",))]

    async def body() -> None:
        await svc.create("v", {})
        await svc.mount("v", "m1")
        for _ in range(3):
            assert await h.check() == []

    asyncio.run(body())
    assert _ids(svc, "v") == {"m1": 1} and h.suspects() == []


def test_a_new_mount_id_between_passes_is_not_released_early(tmp_path: Path) -> None:
    svc, _api, h = _setup(tmp_path)

    async def body() -> None:
        await svc.create("v", {})
        await svc.mount("v", "m1")
        await h.check()
        await svc.mount("v", "m2")  # a new container's mount, between the passes
        assert await h.check() == []
        assert await h.check() == ["v"]  # both seen twice unchanged now, no container

    asyncio.run(body())
    assert h.released == [("v", ("m1", "m2"))]


def test_after_the_engine_stopped_answering_the_healer_waits_for_it_again(
    tmp_path: Path,
) -> None:
    class Flaky(FakeAPI):
        def __init__(self) -> None:
            super().__init__()
            self.pings = 0
            self.fail_next = True

        def ping(self) -> bool:
            self.pings += 1
            return True

        def containers(self) -> list[Container]:
            if self.fail_next:
                self.fail_next = False
                raise EngineUnavailable("engine restarting")
            return []

    svc, _, _ = _setup(tmp_path)
    api = Flaky()
    h = StaleMountHealer(svc, api, every=0.01, quiet=0.01)

    async def body() -> None:
        await svc.create("v", {})
        await svc.mount("v", "m1")  # something to check
        task = asyncio.create_task(h.run())
        try:
            deadline = asyncio.get_running_loop().time() + 5
            while api.pings < 2 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)  # polling the fake's state
        finally:
            task.cancel()

    asyncio.run(body())
    assert api.pings == 2 and not api.fail_next, "one ping at start, one after the outage"


def _reply(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "driver": "LocalDriver",
        "scope": "local",
        "volumes": [{"name": "db", "mounts": 1, "mountpoint": "/m/db"}, {"name": "idle"}],
        "active_mounts": 1,
        "health": {"ready": True, "recovered_mounts": 1, "problems": []},
    }
    return {**base, **kw}


def test_status_lists_suspects_and_the_exact_release_command() -> None:
    from dockvol._cli.status import render

    out = render(_reply(), Path("/run/docker/plugins/dockvol.sock"))
    assert "dockvol volume release --socket /run/docker/plugins/dockvol.sock db --all" in out
    assert "idle --all" not in out  # no mount record, nothing to release
    healing = render(_reply(healing=True), Path("/s.sock"))
    assert "volume release" not in healing, "a plugin with --docker-host heals them itself"
    fresh = _reply(health={"ready": True, "recovered_mounts": 0, "problems": []})
    assert "volume release" not in render(fresh, Path("/s.sock")), "no record kept: none stale"


def test_status_names_fenced_volumes_and_what_to_do() -> None:
    from dockvol._cli.status import render

    out = render(_reply(fenced={"db": "etcd lease not renewed"}), Path("/s.sock"))
    assert "FENCED:   db: etcd lease not renewed" in out and "restart the plugin" in out
