"""The SQLite registry: round trips, migrations, permissions, and durability under kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dockvol._registry import Conflict, MountRecord, VolumeRecord
from dockvol._registry.sqlite import SCHEMA_VERSION, SchemaTooNew, SqliteRegistry


def record(name: str, **opts: str) -> VolumeRecord:
    return VolumeRecord(name=name, key=f"{name}-k", options=opts, created_at=datetime.now(UTC))


def test_records_survive_reopening(tmp_path: Path) -> None:
    reg = SqliteRegistry(tmp_path)
    rec = record("v1", mode="0750")
    reg.create(rec)
    reg.set_mount("v1", MountRecord("id1", 2, "/mnt/v1"))
    reg.set_mount("v1", MountRecord("id2", 1, "/mnt/v1"))
    reg.delete_mount("v1", "id2")
    reg.set_options("v1", {"mode": "0700"})
    reg.close()

    again = SqliteRegistry(tmp_path)
    got = again.get("v1")
    assert got is not None
    assert got.options == {"mode": "0700"}
    assert got.created_at == rec.created_at
    assert dict(got.mounts) == {"id1": MountRecord("id1", 2, "/mnt/v1")}
    assert got.mountpoint == "/mnt/v1"


def test_create_of_an_existing_name_conflicts(tmp_path: Path) -> None:
    reg = SqliteRegistry(tmp_path)
    reg.create(record("v"))
    with pytest.raises(Conflict) as c:
        reg.create(record("v", x="1"))
    assert c.value.existing.options == {}


def test_delete_forgets_the_volume_and_its_mounts(tmp_path: Path) -> None:
    reg = SqliteRegistry(tmp_path)
    reg.create(record("v"))
    reg.set_mount("v", MountRecord("id", 1, "/m"))
    reg.delete("v")
    reg.close()
    again = SqliteRegistry(tmp_path)
    assert again.get("v") is None
    assert list(again.all()) == []
    n = sqlite3.connect(tmp_path / "registry.db").execute("SELECT count(*) FROM mounts").fetchone()
    assert n == (0,)


def test_state_is_private_to_root(tmp_path: Path) -> None:
    state = tmp_path / "state"
    SqliteRegistry(state).close()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "registry.db").stat().st_mode) == 0o600


def test_schema_version_is_recorded_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    SqliteRegistry(tmp_path).close()
    db = sqlite3.connect(tmp_path / "registry.db")
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(SchemaTooNew, match="upgrade dockvol"):
        SqliteRegistry(tmp_path)


_WRITER = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from dockvol._registry import MountRecord, VolumeRecord
from dockvol._registry.sqlite import SqliteRegistry
reg = SqliteRegistry(Path(sys.argv[1]))
i = 0
while True:
    name = f"v{i}"
    reg.create(VolumeRecord(name, name, {}, datetime.now(UTC)))
    reg.set_mount(name, MountRecord("m", 1, "/x"))
    print(name, flush=True)  # only after both commits returned
    i += 1
"""


def test_every_confirmed_write_survives_kill_9(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    confirmed = [proc.stdout.readline().strip() for _ in range(200)]
    os.kill(proc.pid, signal.SIGKILL)  # in the middle of its next write
    proc.wait()
    reg = SqliteRegistry(tmp_path)
    for name in confirmed:
        rec = reg.get(name)
        assert rec is not None, name
        assert "m" in rec.mounts, name
