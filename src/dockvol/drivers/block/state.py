"""What the driver knows in memory about its volumes on this host (rebuilt at start from the
kernel's tables: see recovery.py)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Attachment:
    device: str
    devnum: str
    mountpoint: Path


@dataclass(slots=True)
class State:
    """Guarded by ``lock``. ``attached``: volume key -> its attachment here. ``unclaimed``: loop
    devices of ours found mounted at start, until a record claims them (key -> device).
    ``fenced``: keys fenced on this host since the plugin started (key -> why); they stay fenced
    until the plugin restarts. ``settled``: the unclaimed devices were dealt with."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    attached: dict[str, Attachment] = field(default_factory=dict)
    unclaimed: dict[str, str] = field(default_factory=dict)
    fenced: dict[str, str] = field(default_factory=dict)
    settled: bool = False

    def attachment(self, key: str) -> Attachment | None:
        with self.lock:
            return self.attached.get(key)

    def record(self, key: str, att: Attachment) -> None:
        with self.lock:
            self.attached[key] = att

    def forget(self, key: str) -> None:
        with self.lock:
            self.attached.pop(key, None)

    def fenced_reason(self, key: str) -> str | None:
        with self.lock:
            return self.fenced.get(key)
