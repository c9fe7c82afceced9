"""A registry that keeps nothing on disk: for unit tests and experiments only."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from .base import Conflict, MountRecord, Registry, VolumeRecord


class MemoryRegistry(Registry):
    def __init__(self) -> None:
        self._volumes: dict[str, VolumeRecord] = {}

    def get(self, name: str) -> VolumeRecord | None:
        return self._volumes.get(name)

    def all(self) -> Iterable[VolumeRecord]:
        return list(self._volumes.values())

    def create(self, record: VolumeRecord) -> None:
        existing = self._volumes.get(record.name)
        if existing is not None:
            raise Conflict(existing)
        self._volumes[record.name] = record
        self.generation += 1

    def delete(self, name: str) -> None:
        self._volumes.pop(name, None)
        self.generation += 1

    def set_options(self, name: str, options: Mapping[str, str]) -> None:
        rec = self._volumes[name]
        self._volumes[name] = dataclasses.replace(rec, options=dict(options))
        self.generation += 1

    def set_mount(self, name: str, mount: MountRecord) -> None:
        rec = self._volumes[name]
        mounts = dict(rec.mounts)
        mounts[mount.mount_id] = mount
        self._volumes[name] = dataclasses.replace(rec, mounts=mounts)
        self.generation += 1

    def delete_mount(self, name: str, mount_id: str) -> None:
        rec = self._volumes.get(name)
        if rec is None or mount_id not in rec.mounts:
            return
        mounts = {k: v for k, v in rec.mounts.items() if k != mount_id}
        self._volumes[name] = dataclasses.replace(rec, mounts=mounts)
        self.generation += 1
