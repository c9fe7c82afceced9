"""The single-host registry: SQLite (stdlib), WAL, one fsynced transaction per change.

A change that is one statement runs in autocommit mode: SQLite makes that statement its own
transaction (with synchronous=FULL, fsynced before ``execute`` returns), which saves the
BEGIN and COMMIT round trips; a change of several statements runs in BEGIN IMMEDIATE/COMMIT.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path

from .base import EMPTY, Conflict, MountRecord, Registry, VolumeRecord

DB_NAME = "registry.db"
WAL_PAGES = 128  # checkpoint (and wrap the WAL) at this many pages

# Entry i migrates the schema from version i to i+1 (the version is PRAGMA user_version).
# Plain statements, run inside one transaction (executescript would commit on its own).
_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE volumes (
            name       TEXT PRIMARY KEY,
            key        TEXT NOT NULL UNIQUE,
            options    TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE mounts (
            volume     TEXT NOT NULL REFERENCES volumes(name) ON DELETE CASCADE,
            mount_id   TEXT NOT NULL,
            count      INTEGER NOT NULL CHECK (count > 0),
            mountpoint TEXT NOT NULL,
            PRIMARY KEY (volume, mount_id)
        )""",
    ],
    # v2: which driver owns this state (another driver must not adopt its volumes).
    ["CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"],
]
SCHEMA_VERSION = len(_MIGRATIONS)


_INSERT_VOLUME = "INSERT INTO volumes (name, key, options, created_at) VALUES (?, ?, ?, ?)"


def _json(options: Mapping[str, str]) -> str:
    return json.dumps(dict(options), sort_keys=True) if options else "{}"


class SchemaTooNew(Exception):
    pass


class SqliteRegistry(Registry):
    """Registry in ``STATE_DIR/registry.db``. Thread-safe; writes serialised by one lock."""

    quick_writes = True  # a transaction and one fsync on the state directory's disk

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(state_dir, 0o700)
        self.path = state_dir / DB_NAME
        if not self.path.exists():
            # Create it 0600 before SQLite opens it: state can hold paths and options.
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a commit is fsynced before it returns
        # A WAL that has wrapped is overwritten in place, and its fsync then writes data only:
        # a growing WAL changes its size on every commit, which costs a filesystem journal
        # commit (ext4) on top. Checkpointing at 128 pages instead of 1000 wraps it after ~40
        # changes instead of ~330; each checkpoint (one in ~40 commits) copies a few pages.
        # Durability is the same: every commit is in the fsynced WAL before it returns.
        self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
        self._db.execute("PRAGMA foreign_keys=ON")
        # Reads come from the in-memory view, never from SQLite: its page cache only serves the
        # few B-tree pages a write touches. 256 KiB instead of the default 2 MiB, which a
        # registry of 10,000 volumes filled (1.5 MB of the plugin's RSS).
        self._db.execute("PRAGMA cache_size=-256")
        self._migrate()
        self._view: dict[str, VolumeRecord] = self._load()

    # -- setup ----------------------------------------------------------------------------------
    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"{self.path} has schema version {version}, newer than this dockvol knows "
                f"({SCHEMA_VERSION}): upgrade dockvol, or restore the state from a backup"
            )
        for v in range(version, SCHEMA_VERSION):
            with self._tx():
                for statement in _MIGRATIONS[v]:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {v + 1}")

    def _load(self) -> dict[str, VolumeRecord]:
        mounts: dict[str, dict[str, MountRecord]] = {}
        for volume, mount_id, count, mountpoint in self._db.execute(
            "SELECT volume, mount_id, count, mountpoint FROM mounts"
        ):
            mounts.setdefault(volume, {})[mount_id] = MountRecord(mount_id, count, mountpoint)
        view = {}
        for name, key, options, created_at in self._db.execute(
            "SELECT name, key, options, created_at FROM volumes"
        ):
            view[name] = VolumeRecord(
                name=name,
                key=key,
                options=EMPTY if options == "{}" else json.loads(options),
                created_at=datetime.fromisoformat(created_at),
                mounts=mounts.get(name, EMPTY),
            )
        return view

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    # -- reads ----------------------------------------------------------------------------------
    def get(self, name: str) -> VolumeRecord | None:
        return self._view.get(name)

    def all(self) -> Iterable[VolumeRecord]:
        # A snapshot: list() of a dict's values runs in C under the GIL, so a write in a pool
        # thread cannot change the dict while it is copied, nor while a caller iterates.
        return list(self._view.values())

    # -- writes ---------------------------------------------------------------------------------
    def create(self, record: VolumeRecord) -> None:
        with self._lock:
            existing = self._view.get(record.name)
            if existing is not None:
                raise Conflict(existing)
            row = (record.name, record.key, _json(record.options), record.created_at.isoformat())
            if not record.mounts:  # one statement: its own transaction, fsynced (autocommit)
                self._db.execute(_INSERT_VOLUME, row)
            else:
                with self._tx():
                    self._db.execute(_INSERT_VOLUME, row)
                    for m in record.mounts.values():
                        self._insert_mount(record.name, m)
            self._view[record.name] = record
            self.generation += 1

    def delete(self, name: str) -> None:
        with self._lock:
            # One statement (its mount records go with it, ON DELETE CASCADE): autocommit.
            self._db.execute("DELETE FROM volumes WHERE name = ?", (name,))
            self._view.pop(name, None)
            self.generation += 1

    def set_options(self, name: str, options: Mapping[str, str]) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE volumes SET options = ? WHERE name = ?", (_json(options), name)
            )
            self._replace(name, options=dict(options))

    def set_mount(self, name: str, mount: MountRecord) -> None:
        with self._lock:
            self._insert_mount(name, mount)
            rec = self._view[name]
            self._replace(name, mounts={**rec.mounts, mount.mount_id: mount})

    def delete_mount(self, name: str, mount_id: str) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM mounts WHERE volume = ? AND mount_id = ?", (name, mount_id)
            )
            rec = self._view.get(name)
            if rec is not None and mount_id in rec.mounts:
                mounts = {k: v for k, v in rec.mounts.items() if k != mount_id}
                self._replace(name, mounts=mounts)

    def owner(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def set_owner(self, owner: Mapping[str, str]) -> None:
        with self._lock, self._tx():
            for k, v in owner.items():
                self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (k, v))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- helpers --------------------------------------------------------------------------------
    def _insert_mount(self, name: str, m: MountRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO mounts (volume, mount_id, count, mountpoint) VALUES (?, ?, ?, ?)",
            (name, m.mount_id, m.count, m.mountpoint),
        )

    def _replace(self, name: str, **changes: object) -> None:
        # Records are immutable and replaced whole, so readers on the event loop never see a
        # half-applied change (readers iterate a snapshot: see all()).
        rec = self._view[name]
        self._view[name] = dataclasses.replace(rec, **changes)  # type: ignore[arg-type]
        self.generation += 1


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
