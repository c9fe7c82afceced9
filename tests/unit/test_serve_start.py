"""`dockvol serve` at start: per-plugin directories, one process per state, the state's owner,
and drivers loaded from the current directory. Real `dockvol serve` processes, no engine."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from dockvol._cli import serve, serve_flags
from tests.support.plugin import Plugin

REPO = Path(__file__).resolve().parents[2]


def dockvol_serve(
    *args: str, cwd: Path | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run `dockvol serve` expecting it to refuse (it exits by itself)."""
    return subprocess.run(
        [sys.executable, "-m", "dockvol", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def paths(base: Path) -> tuple[Path, Path, Path]:
    return base / "p.sock", base / "root", base / "state"


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


# -- per-plugin defaults ------------------------------------------------------------------------
def test_two_plugin_names_get_their_own_root_and_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serve_flags, "BASE_DIR", str(tmp_path))
    monkeypatch.setattr(serve, "LEGACY_STATE", str(tmp_path / "state"))
    a, b = parsed("--name", "dockvol"), parsed("--name", "ramdisk")
    serve.resolve_paths(a)
    serve.resolve_paths(b)
    assert (a.root, a.state) == (tmp_path / "dockvol/volumes", tmp_path / "dockvol/state")
    assert (b.root, b.state) == (tmp_path / "ramdisk/volumes", tmp_path / "ramdisk/state")


def test_an_older_install_keeps_its_state_for_the_name_dockvol_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(serve_flags, "BASE_DIR", str(tmp_path))
    monkeypatch.setattr(serve, "LEGACY_ROOT", str(tmp_path / "volumes"))
    monkeypatch.setattr(serve, "LEGACY_STATE", str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    (tmp_path / "state/registry.db").touch()
    old = parsed()
    serve.resolve_paths(old)
    assert (old.root, old.state) == (tmp_path / "volumes", tmp_path / "state")
    assert "mv" in caplog.text  # the log says how to move it
    other = parsed("--name", "ramdisk")
    serve.resolve_paths(other)
    assert other.state == tmp_path / "ramdisk/state"


def test_an_unusable_plugin_name_is_refused(tmp_path: Path) -> None:
    sock, _root, _state = paths(tmp_path)
    r = dockvol_serve("--name", "../x", "--socket", str(sock))
    assert r.returncode == 1 and "cannot name this plugin's socket and directories" in r.stderr
    assert not sock.exists()


def test_a_managed_plugins_name_is_fine_with_explicit_paths(tmp_path: Path) -> None:
    sock, root, state = paths(tmp_path)
    p = Plugin.start(sock, root, state, name="me/dockvol-local")  # as config.json starts it
    p.stop()


# -- one process per state ----------------------------------------------------------------------
def test_a_second_process_on_the_same_state_exits_naming_the_first(tmp_path: Path) -> None:
    sock, root, state = paths(tmp_path)
    first = Plugin.start(sock, root, state)
    try:
        other = tmp_path / "other"
        r = dockvol_serve(
            "--socket", str(other / "p.sock"), "--root", str(other / "root"), "--state", str(state)
        )
        assert r.returncode == 1
        assert first.proc is not None
        assert f"pid {first.proc.pid}" in r.stderr and str(state) in r.stderr
        # It touched nothing: no root, no socket, and the first plugin still serves.
        assert not (other / "root").exists() and not (other / "p.sock").exists()
        assert first.call("VolumeDriver.List", {})[0] == 200
    finally:
        first.stop()


def test_the_lock_dies_with_its_process(tmp_path: Path) -> None:
    sock, root, state = paths(tmp_path)
    first = Plugin.start(sock, root, state)
    first.kill()  # kill -9: no clean-up ran
    second = Plugin.start(sock, root, state)
    second.stop()


# -- the state's owner --------------------------------------------------------------------------
def test_another_driver_on_the_state_refuses_to_start_and_touches_nothing(tmp_path: Path) -> None:
    sock, root, state = paths(tmp_path)
    p = Plugin.start(sock, root, state)
    p.call("VolumeDriver.Create", {"Name": "kept"})
    p.stop()
    other_root = tmp_path / "blkroot"
    r = dockvol_serve(
        "--driver", "block", "--socket", str(sock), "--root", str(other_root), "--state", str(state)
    )
    assert r.returncode == 1, r.stderr
    assert "belongs to driver 'dockvol.drivers.local:LocalDriver'" in r.stderr
    assert not other_root.exists() and not sock.exists()
    again = Plugin.start(sock, root, state)  # the owner still starts, with its volume
    try:
        assert again.call("VolumeDriver.Get", {"Name": "kept"})[1]["Volume"]["Name"] == "kept"
    finally:
        again.stop()


# -- loading a driver -----------------------------------------------------------------------------
def test_a_driver_module_in_the_current_directory_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, root, state = paths(tmp_path)
    (tmp_path / "mydriver.py").write_text(
        "from dockvol.drivers.local import LocalDriver\n\nclass Mine(LocalDriver):\n    pass\n"
    )
    monkeypatch.delenv("PYTHONPATH", raising=False)  # found only because it is in the cwd
    p = Plugin.start(sock, root, state, "--driver", "mydriver:Mine", cwd=tmp_path)
    try:
        assert p.call("VolumeDriver.Create", {"Name": "v"}) == (200, {})
        assert "(Mine)" in p.output()
    finally:
        p.stop()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("nosuchmodule:Driver", "importing module 'nosuchmodule' failed"),
        ("mydriver:Missing", "has no 'Missing'; its drivers: Mine"),
        ("broken:Driver", "raised ZeroDivisionError"),
        ("nosuch", "unknown driver 'nosuch'"),
    ],
)
def test_a_driver_that_cannot_load_says_why(tmp_path: Path, spec: str, expected: str) -> None:
    (tmp_path / "mydriver.py").write_text(
        "from dockvol import Driver\n\nclass Mine(Driver):\n    pass\n"
    )
    (tmp_path / "broken.py").write_text("1 / 0\n")
    sock, _root, state = paths(tmp_path)
    r = dockvol_serve("--driver", spec, "--socket", str(sock), "--state", str(state), cwd=tmp_path)
    assert r.returncode == 1
    assert expected in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
