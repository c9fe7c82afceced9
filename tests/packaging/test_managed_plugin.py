"""Managed (v2) plugins end to end, on a private engine and a loopback registry: build with the
real CLI, enable, use from containers, refuse to disable while in use, upgrade from a registry
keeping every volume and its data, install from the registry, remove."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.packaging.conftest import BASE_IMAGE, Registry, dockvol
from tests.support.engine import Engine

pytestmark = pytest.mark.engine

BUSYBOX = "busybox:local"
# Small volumes keep mkfs quick for the block driver; the local driver takes no size.
VOLUME_OPTS = {"local": [], "block": ["-o", "size=64M"]}


def build(engine: Engine, name: str, driver: str, *extra: str) -> str:
    r = dockvol(
        engine,
        "plugin",
        "build",
        name,
        "--driver",
        driver,
        "--base-image",
        BASE_IMAGE,
        *extra,
    )
    assert r.returncode == 0, f"dockvol plugin build failed:\n{r.stderr}"
    assert r.stdout.startswith(f"built plugin {name}: driver {driver}"), r.stdout
    return r.stdout


@pytest.fixture(scope="module")
def pushed(engine: Engine, registry: Registry) -> Callable[[str], str]:
    """``pushed(driver)``: the second build of a driver, pushed to the registry (once per
    module) and removed from the engine, as a published upgrade would be."""
    done: dict[str, str] = {}

    def get(driver: str) -> str:
        if driver not in done:
            ref = f"{registry.address}/dvtest/{driver}:2"
            build(engine, ref, driver, "--log-level", "debug")
            r = dockvol(engine, "plugin", "push", ref)
            assert r.returncode == 0, f"dockvol plugin push failed:\n{r.stderr}"
            assert r.stdout.startswith(f"pushed plugin {ref}"), r.stdout
            engine.docker("plugin", "rm", ref)
            done[driver] = ref
        return done[driver]

    return get


def plugin_json(engine: Engine, name: str) -> dict[str, object]:
    out = engine.docker("plugin", "inspect", name, "--format", "{{json .}}").stdout
    return json.loads(out)  # type: ignore[no-any-return]


def files_named(engine: Engine, root: str, name: str) -> list[str]:
    """Contents of the files called ``name`` under ``root`` in the engine's mount namespace
    (a block volume is mounted there, not in the test's namespace)."""
    assert engine.proc is not None
    r = subprocess.run(
        [
            "nsenter",
            "-t",
            str(engine.proc.pid),
            "-m",
            "find",
            root,
            "-name",
            name,
            "-type",
            "f",
            "-exec",
            "cat",
            "{}",
            ";",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines(keepends=True)


def readiness_seconds(engine: Engine, plugin_id: str) -> float:
    """What the plugin itself logged: seconds from process start to listening."""
    found = re.findall(
        rf"listening ([0-9.]+) s after process start.*plugin={plugin_id}",
        engine.log.read_text(errors="replace"),
    )
    assert found, f"plugin {plugin_id} never logged that it was listening"
    return float(found[-1])


@pytest.mark.parametrize("driver", ["local", "block"])
def test_build_enable_use_refuse_disable_upgrade_keeps_volumes_then_rm(
    engine: Engine, pushed: Callable[[str], str], driver: str
) -> None:
    name = f"dvtest/{driver}:1"
    vol = f"pv-{driver}"
    build(engine, name, driver)

    info = plugin_json(engine, name)
    config = info["Config"]
    assert isinstance(config, dict)
    assert config["Interface"]["Types"] == ["docker.volumedriver/1.0"]
    caps = config["Linux"]["Capabilities"] or []
    assert ("CAP_SYS_ADMIN" in caps) == (driver == "block")
    assert config["Linux"]["AllowAllDevices"] == (driver == "block")
    propagated = config["PropagatedMount"]

    engine.docker("plugin", "enable", name)
    plugin_id = str(info["Id"])
    print(f"{driver}: listening {readiness_seconds(engine, plugin_id):.2f} s after start")

    engine.docker("volume", "create", "-d", name, *VOLUME_OPTS[driver], vol)
    holder = engine.docker(
        "run",
        "-d",
        "--network",
        "none",
        "-v",
        f"{vol}:/d",
        BUSYBOX,
        "sh",
        "-c",
        f"echo payload-{driver} > /d/f && sync && sleep 600",
    ).stdout.strip()
    # The container's data is under the plugin's propagated mount, seen from the engine.
    host_root = f"{engine.dir}/data/plugins/{plugin_id}/propagated-mount"
    assert f"payload-{driver}\n" in files_named(engine, host_root, "f"), propagated
    read = engine.docker("exec", holder, "cat", "/d/f").stdout
    assert read == f"payload-{driver}\n"

    refused = engine.docker("plugin", "disable", name, check=False)
    assert refused.returncode != 0 and "in use" in refused.stderr, refused
    engine.docker("rm", "-f", holder)

    upgrade = pushed(driver)
    engine.docker("plugin", "disable", "-f", name)
    # The engine asks for confirmation when the images differ: answer as a user would.
    engine.docker("plugin", "upgrade", "--grant-all-permissions", name, upgrade, input="y\n")
    assert plugin_json(engine, name)["PluginReference"] == upgrade
    engine.docker("plugin", "enable", name)

    assert vol in engine.docker("volume", "ls", "-q").stdout.split()
    again = engine.docker(
        "run", "--rm", "--network", "none", "-v", f"{vol}:/d", BUSYBOX, "cat", "/d/f"
    ).stdout
    assert again == f"payload-{driver}\n"

    engine.docker("volume", "rm", vol)
    engine.docker("plugin", "disable", name)
    engine.docker("plugin", "rm", name)
    assert name not in engine.docker("plugin", "ls", "--format", "{{.Name}}").stdout
    # rm deletes the data and the records together (docs/packaging.md says so).
    assert not (engine.dir / "data" / "plugins" / plugin_id).exists()


def test_install_from_registry_with_settings_then_use(
    engine: Engine, pushed: Callable[[str], str]
) -> None:
    ref = pushed("local")
    alias = "dvinstalled"
    engine.docker(
        "plugin",
        "install",
        "--grant-all-permissions",
        "--alias",
        alias,
        ref,
        "DOCKVOL_LOG_LEVEL=warning",
    )
    info = plugin_json(engine, alias)
    settings = info["Settings"]
    assert isinstance(settings, dict)
    assert "DOCKVOL_LOG_LEVEL=warning" in settings["Env"]
    engine.docker("volume", "create", "-d", alias, "iv")
    out = engine.docker(
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "iv:/d",
        BUSYBOX,
        "sh",
        "-c",
        "echo installed > /d/f && cat /d/f",
    ).stdout
    assert out == "installed\n"
    # The registry lives next to the volumes, in the plugin's propagated mount.
    propagated = engine.dir / "data" / "plugins" / str(info["Id"]) / "propagated-mount"
    assert (propagated / "state" / "registry.db").exists()
    engine.docker("volume", "rm", "iv")
    engine.docker("plugin", "disable", alias)
    engine.docker("plugin", "rm", alias)


def test_build_refuses_an_existing_name_before_building(engine: Engine) -> None:
    engine.docker("plugin", "create", "dvtest/taken:1", str(_tiny_plugin(engine)))
    r = dockvol(engine, "plugin", "build", "dvtest/taken:1", "--base-image", BASE_IMAGE)
    assert r.returncode == 1
    assert "checking the name failed: plugin dvtest/taken:1 already exists" in r.stderr
    assert "docker plugin upgrade" in r.stderr
    engine.docker("plugin", "rm", "dvtest/taken:1")


def _tiny_plugin(engine: Engine) -> Path:
    d = engine.dir / "tiny"
    (d / "rootfs").mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(
        json.dumps(
            {
                "description": "placeholder",
                "documentation": "-",
                "entrypoint": ["/x"],
                "interface": {"types": ["docker.volumedriver/1.0"], "socket": "x.sock"},
                "network": {"type": "none"},
            }
        )
    )
    return d


def test_build_failure_names_the_step_and_what_to_do(engine: Engine) -> None:
    r = dockvol(
        engine,
        "plugin",
        "build",
        "dvtest/broken:1",
        "--base-image",
        "127.0.0.1:1/no-such-image:1",
        timeout=300,
    )
    assert r.returncode == 1
    assert "building the rootfs image failed" in r.stderr
    assert "what to do:" in r.stderr
    assert "Traceback" not in r.stderr
    assert "dvtest/broken:1" not in engine.docker("plugin", "ls").stdout


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_your_own_driver_class_ships_as_a_managed_plugin(engine: Engine) -> None:
    """The README's example driver (examples/tmpfs_driver.py), built from its directory as its
    author would (`--driver tmpfs_driver:TmpfsDriver`): the plugin runs that class."""
    name = "dvtest/ramdisk:1"
    r = dockvol(
        engine, "plugin", "build", name, "--driver", "tmpfs_driver:TmpfsDriver",
        "--base-image", BASE_IMAGE, cwd=EXAMPLES,
    )  # fmt: skip
    assert r.returncode == 0, f"dockvol plugin build failed:\n{r.stderr}"
    assert r.stdout.startswith(f"built plugin {name}: driver tmpfs_driver:TmpfsDriver"), r.stdout
    config = plugin_json(engine, name)["Config"]
    assert isinstance(config, dict)
    assert config["WorkDir"] == "/opt/dockvol/drivers"
    assert "CAP_SYS_ADMIN" in (config["Linux"]["Capabilities"] or [])  # tmpfs mounts need it
    engine.docker("plugin", "enable", name)
    try:
        engine.docker("volume", "create", "-d", name, "-o", "size=8M", "scratch")
        # The driver's own option schema, from the shipped class: unknown keys refused.
        bad = engine.docker("volume", "create", "-d", name, "-o", "colour=red", "bad", check=False)
        assert bad.returncode != 0 and "colour" in bad.stderr and "size" in bad.stderr, bad
        out = engine.docker(
            "run", "--rm", "--network", "none", "-v", "scratch:/s", BUSYBOX, "sh", "-c",
            "df -k /s | tail -n 1; dd if=/dev/zero of=/s/f bs=1M count=16 2>&1; true",
        ).stdout  # fmt: skip
        fs, blocks = out.split()[0], int(out.split()[1])
        assert fs == "tmpfs" and blocks == 8 * 1024, out  # the class's mount, its size option
        assert "No space left on device" in out, out
        engine.docker("volume", "rm", "scratch")
    finally:
        engine.docker("plugin", "disable", "-f", name, check=False)
        engine.docker("plugin", "rm", "-f", name, check=False)


def test_build_of_a_driver_that_is_not_there_says_where_it_looked(engine: Engine) -> None:
    r = dockvol(engine, "plugin", "build", "dvtest/none:1", "--driver", "nosuch:Driver")
    assert r.returncode == 1
    assert "choosing the driver" in r.stderr and "nosuch.py" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
