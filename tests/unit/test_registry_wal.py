"""The SQLite registry's write-ahead log wraps early and is then overwritten in place (an fsync
of data only, no filesystem journal commit for a size change), and stays small."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from dockvol._registry.base import VolumeRecord
from dockvol._registry.sqlite import DB_NAME, WAL_PAGES, SqliteRegistry

FRAME = 4096 + 24  # a page and its WAL frame header


def test_the_wal_wraps_after_a_few_changes_and_stops_growing(tmp_path: Path) -> None:
    reg = SqliteRegistry(tmp_path)
    wal = tmp_path / f"{DB_NAME}-wal"
    sizes = []
    for i in range(400):  # 800 changes: a 1000-page WAL would still be growing
        reg.create(VolumeRecord(f"v{i}", f"k{i}", {}, datetime.now(UTC)))
        reg.delete(f"v{i}")
        sizes.append(wal.stat().st_size)
    # Bounded by the checkpoint size (plus the frames of the transaction that crossed it) ...
    assert max(sizes) <= (WAL_PAGES + 8) * FRAME + 32
    # ... and reused in place: its size stopped changing after some 120 changes.
    assert len(set(sizes[60:])) == 1
    assert {r.name for r in reg.all()} == set()
    reg.close()
    assert list(SqliteRegistry(tmp_path).all()) == []
