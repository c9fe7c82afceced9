"""A real engine reaching the plugin over TCP with mutual TLS, and secrets through a full cycle.

One private engine for the module, with its own /etc/docker/plugins (``engine.specs_dir``). The
plugin serves ``--tcp 127.0.0.1:0 --tls PKI --spec-dir engine.specs_dir``; its unix socket is put
outside the engine's /run/docker/plugins, so TCP is the only way the engine can reach it.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockvol._transport import tls
from tests.support.engine import BUSYBOX_IMAGE, Engine
from tests.support.plugin import Plugin

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
NAME = "dvtls"
SECRET = "Tr0ub4dor&3-never-on-disk"
INLINE = "inline-Secret-9f3c2b7e"


@dataclass
class Env:
    engine: Engine
    plugin: Plugin
    base: Path
    pki: Path
    secrets: Path
    addr: str


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    base = Path(tempfile.mkdtemp(prefix="dvs", dir="/tmp"))
    engine = Engine.start()
    plugin: Plugin | None = None
    try:
        engine.ensure_busybox()
        pki = base / "pki"
        tls.init_pki(pki, ["127.0.0.1", "localhost"])
        secrets = base / "secrets"
        secrets.mkdir(mode=0o700)
        for name, value in (("k1", SECRET), ("k2", SECRET)):
            (secrets / name).write_text(value + "\n")
            (secrets / name).chmod(0o600)
        plugin = Plugin.start(
            base / "admin.sock",
            base / "root",
            base / "state" / "db",
            "--driver", "tests.security.secret_driver:SecretDriver",
            "--tcp", "127.0.0.1:0",
            "--tls", str(pki),
            "--spec-dir", str(engine.specs_dir),
            "--secrets-dir", str(secrets),
            name=NAME,
            env={"PYTHONPATH": str(REPO)},
        )  # fmt: skip
        spec = json.loads((engine.specs_dir / f"{NAME}.json").read_text())
        yield Env(engine, plugin, base, pki, secrets, spec["Addr"])
    finally:
        if plugin is not None:
            for cid in engine.docker("ps", "-aq", check=False).stdout.split():
                engine.docker("rm", "-f", cid, check=False)
            for v in engine.docker("volume", "ls", "-q", check=False).stdout.split():
                engine.docker("volume", "rm", "-f", v, check=False)
            plugin.stop()
        engine.stop()
        shutil.rmtree(base, ignore_errors=True)


def _hostport(addr: str) -> tuple[str, int]:
    host, _, port = addr.removeprefix("https://").rpartition(":")
    return host, int(port)


def test_spec_file_names_https_and_client_certificate(env: Env) -> None:
    spec = json.loads((env.engine.specs_dir / f"{NAME}.json").read_text())
    assert spec["Addr"].startswith("https://127.0.0.1:")
    assert spec["TLSConfig"]["CAFile"] == str(env.pki / "ca.pem")
    assert spec["TLSConfig"]["CertFile"] == str(env.pki / "client.pem")
    assert spec["TLSConfig"]["KeyFile"] == str(env.pki / "client-key.pem")
    # The unix socket is out of the engine's sight: TCP is its only way in.
    assert not (env.engine.plugins_dir / f"{NAME}.sock").exists()


def test_engine_creates_lists_inspects_mounts_and_removes_over_tls(env: Env) -> None:
    e = env.engine
    e.docker("volume", "create", "-d", NAME, "-o", "passphrase=secret:k1", "tlsvol")
    listed = e.docker("volume", "ls", "--filter", f"driver={NAME}", "-q").stdout.split()
    assert "tlsvol" in listed
    info = json.loads(e.docker("volume", "inspect", "tlsvol").stdout)[0]
    assert info["Driver"] == NAME
    assert info["Status"]["options"] == {"passphrase": "secret:k1"}
    out = e.docker(
        "run", "--rm", "--network", "none", "-v", "tlsvol:/d", BUSYBOX_IMAGE,
        "sh", "-c", "echo over-tls > /d/f && cat /d/f",
    ).stdout  # fmt: skip
    assert out.strip() == "over-tls"
    files = [p for p in (env.base / "root").rglob("f") if p.is_file()]
    assert [p.read_text() for p in files] == ["over-tls\n"]
    e.docker("volume", "rm", "tlsvol")
    assert "tlsvol" not in e.docker("volume", "ls", "-q").stdout.split()


def test_engine_without_client_certificate_is_refused(env: Env) -> None:
    # A second spec for the same listener that verifies the server but presents no certificate.
    spec = env.engine.specs_dir / "dvnocert.json"
    spec.write_text(
        json.dumps(
            {"Name": "dvnocert", "Addr": env.addr, "TLSConfig": {"CAFile": str(env.pki / "ca.pem")}}
        )
    )
    try:
        r = env.engine.docker("volume", "create", "-d", "dvnocert", "nocert", check=False)
        assert r.returncode != 0
        # The engine got as far as the TLS handshake (the address is right) and was cut off.
        assert f"{env.addr}/Plugin.Activate" in r.stderr
        assert "nocert" not in env.engine.docker("volume", "ls", "-q").stdout.split()
        assert not any((env.base / "root").glob("nocert*"))
    finally:
        spec.unlink()


def test_clients_without_valid_certificate_get_nothing(env: Env, tmp_path: Path) -> None:
    host, port = _hostport(env.addr)
    body = b'{"Name": "x"}\n'

    def post(ctx: ssl.SSLContext | None) -> int:
        conn: http.client.HTTPConnection
        if ctx is None:
            conn = http.client.HTTPConnection(host, port, timeout=10)
        else:
            conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
        try:
            conn.request("POST", "/VolumeDriver.Get", body=body)
            return conn.getresponse().status
        finally:
            conn.close()

    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        post(tls.client_context(env.pki / "ca.pem"))  # no client certificate
    other = tmp_path / "other"
    tls.init_pki(other, ["127.0.0.1"])
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        post(tls.client_context(env.pki / "ca.pem", other / "client.pem", other / "client-key.pem"))
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        post(None)  # plaintext HTTP to the TLS port
    good = tls.client_context(
        env.pki / "ca.pem", env.pki / "client.pem", env.pki / "client-key.pem"
    )
    assert post(good) == 200
    assert env.plugin.proc is not None and env.plugin.proc.poll() is None


def test_secret_is_needed_again_at_every_attach(env: Env) -> None:
    e = env.engine
    e.docker("volume", "create", "-d", NAME, "-o", "passphrase=secret:k2", "needs-k2")
    saved = (env.secrets / "k2").read_bytes()
    (env.secrets / "k2").unlink()
    try:
        r = e.docker(
            "run", "--rm", "--network", "none", "-v", "needs-k2:/d", BUSYBOX_IMAGE, "true",
            check=False,
        )  # fmt: skip
        assert r.returncode != 0
        assert "secret 'k2' not found" in r.stderr
        assert "DOCKVOL_SECRET_K2" in r.stderr
    finally:
        (env.secrets / "k2").write_bytes(saved)
        (env.secrets / "k2").chmod(0o600)
    e.docker("run", "--rm", "--network", "none", "-v", "needs-k2:/d", BUSYBOX_IMAGE, "true")
    e.docker("volume", "rm", "needs-k2")


def test_inline_secret_is_refused_with_the_reference_form(env: Env) -> None:
    r = env.engine.docker(
        "volume", "create", "-d", NAME, "-o", f"passphrase={INLINE}", "inline", check=False
    )
    assert r.returncode != 0
    assert "passphrase=secret:<NAME>" in r.stderr
    assert INLINE not in r.stderr
    assert "inline" not in env.engine.docker("volume", "ls", "-q").stdout.split()


def _files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        for dirpath, _, filenames in os.walk(root):
            for f in filenames:
                p = Path(dirpath) / f
                if p.is_file() and not p.is_symlink():
                    yield p


def _holding(needle: bytes, *roots: Path) -> list[str]:
    found = []
    for p in _files_under(*roots):
        try:
            if needle in p.read_bytes():
                found.append(str(p))
        except OSError:
            continue
    return found


def test_secrets_found_nowhere_after_a_full_cycle(env: Env) -> None:
    """Create, mount (a container), unmount, inspect, remove; then search everywhere."""
    e = env.engine
    e.docker("volume", "create", "-d", NAME, "-o", "passphrase=secret:k1", "cycle")
    e.docker(
        "run", "--rm", "--network", "none", "-v", "cycle:/d", BUSYBOX_IMAGE,
        "sh", "-c", "echo data > /d/x",
    )  # fmt: skip
    inspect = e.docker("volume", "inspect", "cycle").stdout
    ls = e.docker("volume", "ls").stdout
    e.docker("volume", "rm", "cycle")
    # An inline attempt too: refused, and its value must not have been kept anywhere either.
    e.docker("volume", "create", "-d", NAME, "-o", f"passphrase={INLINE}", "cycle2", check=False)

    for needle in (SECRET, INLINE):
        assert needle not in inspect and needle not in ls
        raw = needle.encode()
        # The plugin's state (SQLite db, WAL), its log, its volumes; the engine's data and log.
        assert _holding(raw, env.base / "state", env.base / "root") == []
        assert raw not in env.plugin.log.read_bytes()
        assert _holding(raw, e.dir / "data", e.log) == []
        # No process carries it on its command line (the plugin resolves it from the file).
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                assert raw not in cmdline.read_bytes(), cmdline
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
    # State files are private to root.
    state = env.base / "state" / "db"
    assert state.stat().st_mode & 0o777 == 0o700
    for f in state.iterdir():
        assert f.stat().st_mode & 0o077 == 0, f


def _serve_tcp(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dockvol", "serve", "--socket", str(tmp / "p.sock"),
         "--root", str(tmp / "root"), "--state", str(tmp / "state"), "--spec-dir",
         str(tmp / "specs"), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tcp", "0.0.0.0:1"], "refusing to serve plaintext TCP"),
        (["--tcp", "127.0.0.1:1"], "--allow-plaintext-tcp"),
        (["--tcp", "0.0.0.0:1", "--allow-plaintext-tcp"], "only accepted for a loopback"),
        (["--tcp", "127.0.0.1:1", "--tls", "/nonexistent"], "tls init"),
        (["--tls", "/nonexistent"], "need --tcp"),
    ],
)
def test_serve_refuses_unsafe_tcp(tmp_path: Path, args: list[str], message: str) -> None:
    r = _serve_tcp(tmp_path, *args)
    assert r.returncode == 1
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "p.sock").exists() and not (tmp_path / "specs").exists()


def test_plaintext_tcp_on_loopback_when_asked(tmp_path: Path) -> None:
    p = Plugin.start(
        tmp_path / "p.sock", tmp_path / "root", tmp_path / "state",
        "--tcp", "127.0.0.1:0", "--allow-plaintext-tcp", "--spec-dir", str(tmp_path / "specs"),
        name="dvplain",
    )  # fmt: skip
    try:
        spec = json.loads((tmp_path / "specs" / "dvplain.json").read_text())
        assert spec["Addr"].startswith("http://127.0.0.1:") and "TLSConfig" not in spec
        host, _, port = spec["Addr"].removeprefix("http://").rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("POST", "/VolumeDriver.List", body=b"{}\n")
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read()) == {"Volumes": []}
        finally:
            conn.close()
    finally:
        assert p.stop() == 0
    assert not (tmp_path / "specs" / "dvplain.json").exists()  # removed on exit
