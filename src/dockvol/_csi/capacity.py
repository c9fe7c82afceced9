"""The capacity each CSI volume was created with, for drivers that have no size of their own.

A directory takes whatever capacity range it is asked for (it can use what its filesystem
has), but the spec still wants a second CreateVolume of the same name with another capacity
refused (ALREADY_EXISTS): this small durable table remembers what the first one asked.
Only a recorded difference refuses; a volume without a record (created by the Docker front
end, or registered on a node from its volume context) accepts any range.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from ..host import write_atomic

log = logging.getLogger("dockvol.csi")
FILE = "csi-capacity.json"


class CapacityRecords:
    def __init__(self, directory: Path | None) -> None:
        #: ``None``: nothing durable to write to (no state directory): kept in memory only.
        self.path = directory / FILE if directory is not None else None
        self._lock = threading.Lock()
        self._table: dict[str, list[int]] = {}
        if self.path is not None and self.path.exists():
            try:
                loaded = json.loads(self.path.read_text())
                self._table = {str(k): [int(x) for x in v] for k, v in loaded.items()}
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                log.warning("ignoring unreadable %s: %s", self.path, exc)

    def get(self, name: str) -> tuple[int, int] | None:
        with self._lock:
            rec = self._table.get(name)
        return (rec[0], rec[1]) if rec else None

    def put(self, name: str, required: int, limit: int) -> None:
        """Blocking (a durable write): call it off the event loop. No range asked: nothing
        to remember (and no write on the common path)."""
        if required == 0 and limit == 0:
            self.forget(name)
            return
        with self._lock:
            if self._table.get(name) == [required, limit]:
                return
            self._table[name] = [required, limit]
            self._save()

    def forget(self, name: str) -> None:
        with self._lock:
            if self._table.pop(name, None) is not None:
                self._save()

    def _save(self) -> None:
        if self.path is not None:
            write_atomic(self.path, json.dumps(self._table, sort_keys=True).encode())
