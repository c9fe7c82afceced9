"""config.json follows the driver's real needs and exposes every serve flag as settable env."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dockvol._cli import serve
from dockvol._packaging import custom
from dockvol._packaging.build import load_driver
from dockvol._packaging.config import PROPAGATED_MOUNT, plugin_config
from dockvol._packaging.docker import StepError


def config(driver: str, name: str = "me/dockvol:1") -> dict[str, object]:
    return plugin_config(name, driver, load_driver(driver))


def env_of(cfg: dict[str, object]) -> dict[str, str]:
    env = cfg["env"]
    assert isinstance(env, list)
    return {e["name"]: e["value"] for e in env}


def serve_flags() -> list[str]:
    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = [o for act in sub.choices["serve"]._actions for o in act.option_strings]
    return [o[2:] for o in flags if o.startswith("--") and o != "--help"]


@pytest.mark.parametrize("driver", ["local", "block"])
def test_every_serve_flag_is_a_settable_env_var(driver: str) -> None:
    cfg = config(driver)
    env = cfg["env"]
    assert isinstance(env, list)
    names = {e["name"] for e in env if e["settable"] == ["value"]}
    for flag in serve_flags():
        assert "DOCKVOL_" + flag.upper().replace("-", "_") in names, flag


def test_local_needs_no_privileges() -> None:
    cfg = config("local")
    assert cfg["linux"] == {"capabilities": [], "allowAllDevices": False, "devices": None}
    assert cfg["mounts"] == []
    assert cfg["network"] == {"type": "none"}


def test_block_gets_sys_admin_and_dev() -> None:
    cfg = config("block")
    linux = cfg["linux"]
    assert isinstance(linux, dict)
    assert linux["capabilities"] == ["CAP_SYS_ADMIN"]
    assert linux["allowAllDevices"] is True
    mounts = cfg["mounts"]
    assert isinstance(mounts, list)
    assert [(m["source"], m["destination"]) for m in mounts] == [("/dev", "/dev")]


@pytest.mark.parametrize("driver", ["local", "block"])
def test_volumes_and_state_are_strictly_under_the_propagated_mount(driver: str) -> None:
    cfg = config(driver)
    env = env_of(cfg)
    assert cfg["propagatedMount"] == PROPAGATED_MOUNT
    for key in ("DOCKVOL_ROOT", "DOCKVOL_STATE"):
        assert env[key].startswith(PROPAGATED_MOUNT + "/"), key
    assert env["DOCKVOL_SOCKET"] == "/run/docker/plugins/dockvol.sock"
    assert cfg["interface"] == {"types": ["docker.volumedriver/1.0"], "socket": "dockvol.sock"}
    assert cfg["description"] and cfg["documentation"]


def test_driver_name_is_the_plugin_name_without_registry_or_tag() -> None:
    assert env_of(config("local", "127.0.0.1:5000/me/vol:2"))["DOCKVOL_NAME"] == "me/vol"
    assert env_of(config("local", "vol"))["DOCKVOL_NAME"] == "vol"


def test_unknown_driver_says_what_to_use() -> None:
    with pytest.raises(StepError, match="--driver local"):
        load_driver("no_such_driver")


def test_cli_prints_the_config_it_would_build() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "dockvol", "plugin", "config", "--driver", "block"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(r.stdout) == config("block", "dockvol")


@pytest.mark.parametrize("driver", ["local", "block", "shared"])
def test_csi_plugin_declares_csi_publishes_and_can_mount(driver: str) -> None:
    cfg = plugin_config("me/dockvol-csi:1", driver, load_driver(driver), csi=True)
    assert cfg["interface"] == {
        "types": ["docker.csicontroller/1.0", "docker.csinode/1.0"],
        "socket": "csi.sock",
    }
    assert cfg["propagatedMount"] == "/data/published"
    env = env_of(cfg)
    # Volumes and state outlive the rootfs (docker plugin upgrade replaces it).
    assert env["DOCKVOL_STATE"].startswith("/data/published/")
    if driver != "shared":
        assert env["DOCKVOL_ROOT"].startswith("/data/published/")
    assert env["CSI_ENDPOINT"] == "unix:///run/docker/plugins/csi.sock"
    assert env["DOCKVOL_SOCKET"] != "/run/docker/plugins/csi.sock"
    linux = cfg["linux"]
    assert isinstance(linux, dict) and "CAP_SYS_ADMIN" in linux["capabilities"]
    mounts = cfg["mounts"]
    assert isinstance(mounts, list)
    shared = [m for m in mounts if m["name"] == "shared"]
    if driver == "shared":
        (m,) = shared
        assert m["settable"] == ["source"] and m["type"] == "bind"
        assert env["DOCKVOL_ROOT"] == m["destination"]
    else:
        assert shared == []


def test_csi_wheels_include_grpc(tmp_path: Path) -> None:
    from dockvol._packaging.wheels import closure

    names = {d.metadata["Name"].lower() for d in closure(extras=("csi",))}
    assert {"grpcio", "protobuf"} <= names
    assert "grpcio" not in {d.metadata["Name"].lower() for d in closure()}


def test_your_own_driver_class_is_shipped_as_source_and_run_from_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "src" / "acme"
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"stale")
    (pkg / "vol.py").write_text(
        "from dockvol.drivers.local import LocalDriver\n\n\n"
        "class AcmeDriver(LocalDriver):\n    '''Acme volumes.'''\n"
    )
    monkeypatch.chdir(tmp_path / "src")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    cls = load_driver("acme.vol:AcmeDriver")
    cfg = plugin_config("me/acme:1", "acme.vol:AcmeDriver", cls)
    assert cfg["workdir"] == custom.DRIVERS_DIR
    assert env_of(cfg)["DOCKVOL_DRIVER"] == "acme.vol:AcmeDriver"
    assert cfg["description"] == "dockvol volume plugin: Acme volumes"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    custom.add_to_context(ctx, "acme.vol:AcmeDriver")
    shipped = sorted(str(p.relative_to(ctx)) for p in ctx.rglob("*") if p.is_file())
    # The whole top-level package, without bytecode; the module the image build imports.
    assert shipped == ["driver-module", "drivers/acme/__init__.py", "drivers/acme/vol.py"]
    assert (ctx / "driver-module").read_text() == "acme.vol\n"


def test_installed_packages_and_dockvol_itself_are_not_shipped_as_drivers() -> None:
    import msgspec  # imported, as load_driver would have

    assert msgspec
    with pytest.raises(StepError, match="installed package"):
        custom.source_of("msgspec:Struct")
    with pytest.raises(StepError, match="--driver local, block or shared"):
        custom.source_of("dockvol.drivers.local:LocalDriver")


def custom_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, source: str, csi: bool = False
) -> dict[str, object]:
    """config.json for ``module:TmpfsDriver`` written from ``source``, loaded as ``dockvol plugin
    build --driver`` loads it (from the current directory). Each test names its own module."""
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = f"{module}:TmpfsDriver"
    return plugin_config("me/tmpfs:1", spec, load_driver(spec), csi=csi)


def test_a_driver_class_without_docstring_is_described_by_its_module_docstring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = custom_config(
        tmp_path, monkeypatch, "tmpfs_moddoc",
        '"""Volumes in memory: a ``tmpfs`` per volume,\n'
        "    gone at reboot.\n\n"
        'More about it.\n"""\n'
        "from dockvol.drivers.local import LocalDriver\n\n\n"
        "class TmpfsDriver(LocalDriver):\n    pass\n",
    )  # fmt: skip
    assert cfg["description"] == (
        "dockvol volume plugin: Volumes in memory: a tmpfs per volume, gone at reboot"
    )


def test_a_driver_without_any_docstring_is_described_by_its_module_and_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its base class's docstring describes the base (block volumes), not this driver.
    source = (
        "from dockvol.drivers.block.driver import BlockDriver\n\n\n"
        "class TmpfsDriver(BlockDriver):\n    pass\n"
    )
    cfg = custom_config(tmp_path, monkeypatch, "tmpfs_nodoc", source)
    assert cfg["description"] == "dockvol volume plugin (driver tmpfs_nodoc:TmpfsDriver)"
    cfg = custom_config(tmp_path, monkeypatch, "tmpfs_nodoc", source, csi=True)
    assert cfg["description"] == "dockvol CSI plugin (driver tmpfs_nodoc:TmpfsDriver)"


def test_the_class_docstring_comes_first_and_shipped_drivers_keep_their_description(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = custom_config(
        tmp_path, monkeypatch, "tmpfs_classdoc",
        '"""Helpers and drivers of Acme."""\n'
        "from dockvol.drivers.local import LocalDriver\n\n\n"
        "class TmpfsDriver(LocalDriver):\n"
        '    """Volumes in memory.\n\n    Each one is a tmpfs.\n    """\n',
    )  # fmt: skip
    assert cfg["description"] == "dockvol volume plugin: Volumes in memory"
    assert config("local")["description"] == "dockvol volume plugin: local driver"
    assert config("block")["description"] == (
        "dockvol volume plugin: Size-limited volumes: a sparse image per volume with its own "
        "ext4 or xfs filesystem"
    )
