"""The service's ordering rules: what a failure or a crash at each step leaves behind."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dockvol import Driver, DriverError, Volume
from dockvol._registry import MountRecord, VolumeRecord
from dockvol._registry.memory import MemoryRegistry
from dockvol._service.service import VolumeError, VolumeService

ID_A, ID_B = "a" * 64, "b" * 64


class Recorder(Driver):
    """Records calls; fails where told to."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.calls: list[str] = []
        self.fail: set[str] = set()
        self.recover_result: dict[str, Path | None] = {}

    def _do(self, what: str, volume: Volume) -> None:
        self.calls.append(f"{what} {volume.name}")
        if what in self.fail:
            raise DriverError(f"{what} failed on purpose")

    def create(self, volume: Volume) -> None:
        self._do("create", volume)

    def remove(self, volume: Volume) -> None:
        self._do("remove", volume)

    def mount(self, volume: Volume) -> Path:
        self._do("mount", volume)
        return self.root / volume.key

    def unmount(self, volume: Volume) -> None:
        self._do("unmount", volume)

    def recover(self, volume: Volume, mountpoint: Path | None) -> Path | None:
        self._do("recover", volume)
        return self.recover_result.get(volume.name, mountpoint)

    def audit(self, volumes: Sequence[Volume]) -> list[str]:
        return [f"stray thing beside {len(volumes)} volume(s)"]


class FailingMounts(MemoryRegistry):
    def set_mount(self, name: str, mount: MountRecord) -> None:
        raise OSError("disk full")


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def service(
    tmp_path: Path, registry: MemoryRegistry | None = None
) -> tuple[VolumeService, Recorder]:
    drv = Recorder(tmp_path)
    return VolumeService(drv, registry or MemoryRegistry(), max_workers=2), drv


def test_a_failed_driver_create_leaves_no_record(tmp_path: Path) -> None:
    svc, drv = service(tmp_path)
    drv.fail.add("create")
    with pytest.raises(DriverError, match="on purpose"):
        run(svc.create("v", {}))
    assert svc.get("v") is None


def test_a_mount_that_cannot_be_recorded_is_undone(tmp_path: Path) -> None:
    reg = FailingMounts()
    svc, drv = service(tmp_path, reg)
    run(svc.create("v", {}))
    with pytest.raises(OSError):
        run(svc.mount("v", ID_A))
    assert drv.calls[-2:] == ["mount v", "unmount v"]


def test_a_failed_last_unmount_still_forgets_the_mount_id(tmp_path: Path) -> None:
    svc, drv = service(tmp_path)
    run(svc.create("v", {}))
    run(svc.mount("v", ID_A))
    drv.fail.add("unmount")
    with pytest.raises(DriverError):
        run(svc.unmount("v", ID_A))
    got = svc.get("v")
    assert got is not None and got.mounts == 0
    drv.fail.clear()
    run(svc.remove("v"))  # the volume is not stuck "in use"


def test_reconcile_keeps_volumes_it_cannot_recover_and_reports_them(tmp_path: Path) -> None:
    reg = MemoryRegistry()
    now = datetime.now(UTC)
    reg.create(VolumeRecord("ok", "ok-k", {}, now))
    reg.create(VolumeRecord("broken", "broken-k", {}, now))
    svc, drv = service(tmp_path, reg)
    drv.fail.add("recover")
    health = svc.reconcile()
    assert not health.as_dict()["ok"]
    assert len(health.problems) == 2
    assert {r.name for r in reg.all()} == {"ok", "broken"}


def test_reconcile_moves_mount_records_to_where_the_driver_mounted_again(tmp_path: Path) -> None:
    reg = MemoryRegistry()
    reg.create(VolumeRecord("v", "v-k", {}, datetime.now(UTC)))
    reg.set_mount("v", MountRecord(ID_A, 2, "/old/place"))
    svc, drv = service(tmp_path, reg)
    drv.recover_result["v"] = Path("/new/place")
    health = svc.reconcile()
    assert health.recovered_mounts == 1
    rec = reg.get("v")
    assert rec is not None and rec.mounts[ID_A] == MountRecord(ID_A, 2, "/new/place")


def test_unexplained_storage_is_reported_but_not_a_failure(tmp_path: Path) -> None:
    svc, _ = service(tmp_path)
    health = svc.reconcile().as_dict()
    assert health["ok"] is True
    assert health["unexplained"] == ["stray thing beside 0 volume(s)"]


def test_options_that_no_longer_parse_are_reported_not_lost(tmp_path: Path) -> None:
    reg = MemoryRegistry()
    reg.create(VolumeRecord("v", "v-k", {"gone": "1"}, datetime.now(UTC)))
    svc, _ = service(tmp_path, reg)
    health = svc.reconcile()
    assert "no longer valid" in health.problems[0]
    assert svc.get("v") is not None
    with pytest.raises(VolumeError, match="no longer valid"):
        run(svc.mount("v", ID_B))


def test_a_volume_recover_could_not_remount_is_mounted_again_by_its_next_user(
    tmp_path: Path,
) -> None:
    reg = MemoryRegistry()
    reg.create(VolumeRecord("v", "v-k", {}, datetime.now(UTC)))
    reg.set_mount("v", MountRecord(ID_A, 1, "/was/here"))
    svc, drv = service(tmp_path, reg)
    drv.fail.add("recover")
    svc.reconcile()
    drv.fail.clear()
    path = run(svc.mount("v", ID_B))
    assert drv.calls[-1] == "mount v"  # not the stale path without mounting
    assert path == str(tmp_path / "v-k")
    assert run(svc.mount("v", "c" * 64)) == path
    assert drv.calls.count("mount v") == 1  # mounted again once, then counted as usual
    rec = reg.get("v")
    assert rec is not None and {m.mountpoint for m in rec.mounts.values()} == {path}
