"""Encrypted block volumes through a real private Docker engine (see ../../shared/ENGINE.md).

One engine and one ``dockvol serve --driver block --secrets-dir DIR`` for the module, run inside
the engine's mount namespace (``engine.enter_args()``), as in test_engine.py.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from dockvol._service.names import volume_key
from dockvol.drivers.block import fscrypt, loop
from tests.support.engine import BUSYBOX_IMAGE, Engine
from tests.support.plugin import Plugin

from .conftest import BASE_PREFIX, release_engine_plugin
from .test_engine import run, run_detached, wait_until

pytestmark = pytest.mark.engine

DRIVER = "blockenc"
PASSPHRASE = "Engine-passphrase-6d1f0b never on disk"
WRONG = "a-wrong-passphrase-2b7e"


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=Path(BASE_PREFIX).name, dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def secrets_dir(base: Path) -> Path:
    d = base / "secrets"
    d.mkdir(mode=0o700)
    set_secret(d, PASSPHRASE)
    return d


def set_secret(d: Path, value: str) -> None:
    (d / "ek").write_text(value + "\n")
    (d / "ek").chmod(0o600)


@pytest.fixture(scope="module")
def engine(base: Path) -> Iterator[Engine]:
    eng = Engine.start()
    try:
        eng.ensure_busybox()
        yield eng
    finally:
        eng.stop()


@pytest.fixture(scope="module")
def plugin(engine: Engine, base: Path, secrets_dir: Path) -> Iterator[Plugin]:
    p = Plugin.start(
        engine.plugins_dir / f"{DRIVER}.sock",
        base / "root",
        base / "state" / "db",
        "--driver", "block",
        "--secrets-dir", str(secrets_dir),
        "--log-level", "debug",  # the most a log ever says: still no secret in it
        name=DRIVER,
        wrap=engine.enter_args(),
    )  # fmt: skip
    try:
        yield p
    finally:
        set_secret(secrets_dir, PASSPHRASE)
        release_engine_plugin(engine, p, base, DRIVER)


def image(plugin: Plugin, volume: str) -> Path:
    return plugin.root / "images" / f"{volume_key(volume)}.img"


def detached(plugin: Plugin, volume: str) -> bool:
    return not loop.backing(image(plugin, volume))


_REMOVE_KEY = """
import sys
from pathlib import Path
from dockvol.drivers.block import encryption, fscrypt
mp = Path(sys.argv[1])
ident = encryption.read_header(mp, "v").identifier
fscrypt.remove_key(mp, ident)
print(fscrypt.key_status(mp, ident))
"""


def lose_key(engine: Engine, plugin: Plugin, volume: str) -> int:
    """Remove the volume's key from its filesystem behind the plugin's back (what a reboot loses),
    in the engine's mount namespace; the key's status after."""
    mp = plugin.root / "mounts" / volume_key(volume)
    r = subprocess.run(
        [*engine.enter_args(), sys.executable, "-c", _REMOVE_KEY, str(mp)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return int(r.stdout)


def test_encrypted_volume_through_the_engine(
    engine: Engine, plugin: Plugin, secrets_dir: Path, containers: list[str]
) -> None:
    marker = f"DOCKVOL-ENGINE-MARKER-{secrets.token_hex(8)}"
    opts = ["-o", "size=64M"]
    engine.docker("volume", "create", "-d", DRIVER, *opts, "clear")
    engine.docker(
        "volume", "create", "-d", DRIVER, *opts, "-o", "encrypt=true", "-o",
        "passphrase=secret:ek", "vault",
    )  # fmt: skip
    [info] = json.loads(engine.docker("volume", "inspect", "vault").stdout)
    assert info["Options"]["passphrase"] == "secret:ek"
    assert info["Status"]["encrypted"] is True
    for v in ("clear", "vault"):
        assert run(engine, v, f"echo {marker} > /d/m; cat /d/m") == f"{marker}\n"
        wait_until(f"{v} to be detached", partial(detached, plugin, v))
    # The image holds no plaintext; the unencrypted control shows the scan can find it.
    assert marker.encode() in image(plugin, "clear").read_bytes()
    assert marker.encode() not in image(plugin, "vault").read_bytes()

    # kill -9 with a container using the volume, and the key lost meanwhile: the restarted
    # plugin adds it again from the secret.
    run_detached(engine, containers, "vault-user", "vault")
    assert engine.docker("exec", "vault-user", "cat", "/d/m").stdout == f"{marker}\n"
    plugin.kill()
    status = lose_key(engine, plugin, "vault")
    assert status in (fscrypt.KEY_STATUS_ABSENT, fscrypt.KEY_STATUS_INCOMPLETELY_REMOVED)
    without = engine.docker("exec", "vault-user", "cat", "/d/m", check=False)
    assert without.returncode != 0 and marker not in without.stdout
    plugin.launch()
    assert engine.docker("exec", "vault-user", "cat", "/d/m").stdout == f"{marker}\n"
    engine.docker("rm", "-f", "vault-user")
    wait_until("vault to be detached", lambda: detached(plugin, "vault"))

    # A wrong passphrase (the secret changed) fails the Mount with a clear error, attaching nothing.
    set_secret(secrets_dir, WRONG)
    r = engine.docker(
        "run", "--rm", "--network", "none", "-v", "vault:/d", BUSYBOX_IMAGE, "true", check=False
    )
    assert r.returncode != 0
    assert "wrong passphrase for encrypted volume 'vault'" in r.stderr, r.stderr
    assert WRONG not in r.stderr and PASSPHRASE not in r.stderr
    assert detached(plugin, "vault")
    set_secret(secrets_dir, PASSPHRASE)
    assert run(engine, "vault", "cat /d/m") == f"{marker}\n"
    wait_until("vault to be detached", lambda: detached(plugin, "vault"))

    # The passphrase is nowhere: inspect, the plugin's state and log, images, the engine's files,
    # any command line.
    inspect = engine.docker("volume", "inspect", "vault", "clear").stdout
    for needle in (PASSPHRASE, WRONG):
        raw = needle.encode()
        assert needle not in inspect
        assert raw not in plugin.log.read_bytes()
        for d in (plugin.state.parent, plugin.root, engine.dir / "data"):
            for dirpath, _, files in os.walk(d):
                for f in files:
                    p = Path(dirpath) / f
                    if p.is_file() and not p.is_symlink():
                        assert raw not in p.read_bytes(), p
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                assert raw not in cmdline.read_bytes(), cmdline
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
    for v in ("clear", "vault"):
        engine.docker("volume", "rm", v)


def test_engine_copies_image_content_into_a_new_encrypted_volume(
    engine: Engine, plugin: Plugin
) -> None:
    """The served directory is created empty, so the engine copies the image's files in (busybox's
    /bin here) as it does for any new volume; they land encrypted."""
    engine.docker(
        "volume", "create", "-d", DRIVER, "-o", "size=32M", "-o", "encrypt=true", "-o",
        "passphrase=secret:ek", "copyup",
    )  # fmt: skip
    out = engine.docker(
        "run", "--rm", "--network", "none", "-v", "copyup:/bin", BUSYBOX_IMAGE, "ls", "/bin"
    ).stdout.split()
    assert "busybox" in out and "sh" in out
    wait_until("copyup to be detached", partial(detached, plugin, "copyup"))
    assert b"busybox" not in image(plugin, "copyup").read_bytes()  # names encrypted too
    engine.docker("volume", "rm", "copyup")
