"""The CLI tools against dockvol's own plugin (``dockvol serve``, local driver), as users run them:
``dockvol call`` against a real plugin socket, and the full conformance suite, crashes included,
which dockvol must pass completely."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from dockvol.testing import CHECKS, peer_pid
from tests.support.plugin import Plugin

from .conftest import _wait_gone


def dockvol(
    *args: str, timeout: float = 600, tmpdir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmpdir)} if tmpdir else None
    return subprocess.run(
        [sys.executable, "-m", "dockvol", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def start(d: Path) -> Plugin:
    return Plugin.start(d / "p.sock", d / "root", d / "state")


def stop(plugin: Plugin) -> None:
    """Stop the plugin, and whatever process a restart command left serving its socket."""
    if plugin.sock.exists():
        try:
            pid = peer_pid(plugin.sock)
            if plugin.proc is None or pid != plugin.proc.pid:
                os.kill(pid, signal.SIGTERM)
                _wait_gone(pid)
        except OSError:
            pass
    plugin.stop()


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plugin]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dvc") as d:
        p = start(Path(d))
        try:
            yield p
        finally:
            stop(p)


def test_call_create_get_list_remove(plugin: Plugin) -> None:
    s = str(plugin.sock)
    r = dockvol("call", "--socket", s, "create", "callvol")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {}
    assert "HTTP 200 OK" in r.stderr
    r = dockvol("call", "--socket", s, "get", '{"Name": "callvol"}')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["Volume"]["Name"] == "callvol"
    r = dockvol("call", "--socket", s, "list")
    assert "callvol" in [v["Name"] for v in json.loads(r.stdout)["Volumes"]]
    r = dockvol("call", "--url", f"unix://{s}", "VolumeDriver.Remove", "callvol")
    assert r.returncode == 0, r.stderr


def test_call_mount_then_unmount_with_the_same_id(plugin: Plugin) -> None:
    s = str(plugin.sock)
    assert dockvol("call", "--socket", s, "create", "mvol").returncode == 0
    mid = "ab" * 32
    r = dockvol("call", "--socket", s, "mount", "mvol", "--id", mid)
    assert r.returncode == 0, r.stderr
    assert Path(json.loads(r.stdout)["Mountpoint"]).is_dir()
    r = dockvol("call", "--socket", s, "rm", "mvol")
    assert r.returncode == 1 and json.loads(r.stdout)["Err"]  # in use
    assert dockvol("call", "--socket", s, "unmount", "mvol", "--id", mid).returncode == 0
    assert dockvol("call", "--socket", s, "rm", "mvol").returncode == 0


def test_call_verbose_shows_the_engines_request_and_the_reply_headers(plugin: Plugin) -> None:
    r = dockvol("call", "-v", "--socket", str(plugin.sock), "caps")
    assert r.returncode == 0
    lines = r.stderr.splitlines()
    assert "> POST /VolumeDriver.Capabilities HTTP/1.1" in lines
    assert "> Host: " in lines
    assert "> Accept: application/vnd.docker.plugins.v1.2+json" in lines
    assert not any(li.lower().startswith("> content-type") for li in lines)
    assert any(li.lower().startswith("< content-length") for li in lines)
    assert json.loads(r.stdout)["Capabilities"]["Scope"] == "local"


def test_call_reports_the_plugins_error_with_status_1(plugin: Plugin) -> None:
    r = dockvol("call", "--socket", str(plugin.sock), "get", "no-such-volume")
    assert r.returncode == 1
    assert json.loads(r.stdout)["Err"]


def test_call_usage_and_unreachable_errors(tmp_path: Path) -> None:
    r = dockvol("call", "--socket", str(tmp_path / "none.sock"), "list")
    assert r.returncode == 3 and "cannot reach the plugin" in r.stderr
    r = dockvol("call", "--socket", str(tmp_path / "none.sock"), "lst")
    assert r.returncode == 2 and "unknown endpoint" in r.stderr
    r = dockvol("call", "list")
    assert r.returncode == 2 and "--socket" in r.stderr


def test_conformance_of_dockvol_itself_including_crashes(tmp_path: Path) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dvc") as d:
        p = start(Path(d))
        restart = shlex.join([sys.executable, "-m", "dockvol", "serve", *p.args])
        reports = tmp_path / "reports"
        reports.mkdir()
        out_json, out_junit = reports / "r.json", reports / "r.xml"
        try:
            r = dockvol(
                "conformance",
                "--socket",
                str(p.sock),
                "--destructive",
                "--restart-cmd",
                restart,
                "--json",
                str(out_json),
                "--junit",
                str(out_junit),
                tmpdir=tmp_path,
            )
        finally:
            stop(p)
    report = json.loads(out_json.read_text())
    # dockvol passes every check with no warning, and nothing is left behind.
    failed = {c["check"]: c["message"] for c in report["checks"] if c["result"] != "pass"}
    assert failed == {}, r.stdout
    assert report["left_behind"] == {
        "volumes": {},
        "mount_ids": [],
        "mounts": {},
        "directories": [],
        "files": [],
    }
    assert "left behind: nothing" in r.stdout
    # The restarted plugin's output is beside the reports.
    assert (reports / "plugin-restarts.log").exists()
    assert r.returncode == 0, r.stdout + r.stderr
    assert {c["check"] for c in report["checks"]} == set(CHECKS)
    assert "-> conformant" in r.stdout
    suite = ET.parse(out_junit).getroot()
    assert suite.get("tests") == str(len(CHECKS)) and suite.get("failures") == "0"


def test_conformance_cli_fails_and_explains_on_a_broken_plugin(short_dir: Path) -> None:
    from .conftest import Stub

    stub = Stub(short_dir, "created-at-empty").start()
    try:
        r = dockvol("conformance", "--socket", str(stub.sock), "--skip", "latency,keep-alive")
    finally:
        stub.stop()
    assert r.returncode == 1
    row = next(li for li in r.stdout.splitlines() if li.startswith("get-created-at"))
    assert "FAIL" in row
    assert "fix:" in r.stdout and "engine:" in r.stdout
    assert "docs/conformance.md#get-created-at" in r.stdout
    assert "NOT conformant" in r.stdout


def test_conformance_cli_usage_errors(tmp_path: Path) -> None:
    r = dockvol("conformance", "--socket", "/nonexistent.sock", "--only", "nope")
    assert r.returncode == 2 and "unknown check 'nope'" in r.stderr
    r = dockvol("conformance", "--socket", "/nonexistent.sock", "--destructive")
    assert r.returncode == 2 and "--restart-cmd" in r.stderr
    r = dockvol("conformance", "--socket", str(tmp_path / "x.sock"))
    assert r.returncode == 3
    r = dockvol("conformance", "--list")
    assert r.returncode == 0 and all(name in r.stdout for name in CHECKS)


def test_conformance_cli_sends_options_to_plugins_that_need_them(short_dir: Path) -> None:
    from .conftest import Stub

    stub = Stub(short_dir)
    stub.args += ["--require-opt", "size"]
    stub.start()
    try:
        base = ["conformance", "--socket", str(stub.sock), "--skip", "keep-alive"]
        without = dockvol(*base, "--only", "reply-shape,create-idempotent")
        with_opt = dockvol(*base, "--volumes", "100", "-o", "size=1G")
    finally:
        stub.stop()
    assert without.returncode == 1 and "option 'size' is required" in without.stdout
    assert with_opt.returncode == 0, with_opt.stdout
