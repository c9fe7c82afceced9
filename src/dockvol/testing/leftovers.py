"""What a conformance run could not undo, and how a person removes it by hand.

The kit removes what it creates. What the plugin would not give back (a volume it refuses to
remove, a mount ID it would not release, a mount still on the host, a directory the plugin left
where a removed volume was mounted) is collected here and printed at the end of the report.
"""

from __future__ import annotations

import os
import shlex
import threading
from dataclasses import dataclass, field

from ._http import Address


def _unescape(path: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as octal.
    out, i = [], 0
    while i < len(path):
        if path[i] == "\\" and i + 3 < len(path) and path[i + 1 : i + 4].isdigit():
            out.append(chr(int(path[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def mounted_paths() -> dict[str, str]:
    """Mount points on this host (this mount namespace) -> their filesystem type."""
    found: dict[str, str] = {}
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                parts = left.split()
                if len(parts) >= 5 and right:
                    found[_unescape(parts[4])] = right.split()[0]
    except OSError:
        pass
    return found


@dataclass
class Leftovers:
    address: Address
    volumes: dict[str, str] = field(default_factory=dict)  # name -> why
    held: set[tuple[str, str]] = field(default_factory=set)  # (name, mount ID)
    #: Every Mountpoint a Mount returned, by volume name.
    mountpoints: dict[str, str] = field(default_factory=dict)
    mounts: dict[str, str] = field(default_factory=dict)  # path -> fs type
    dirs: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def volume(self, name: str, why: str) -> None:
        with self._lock:
            self.volumes[name] = why

    def mount_held(self, name: str, mount_id: str) -> None:
        with self._lock:
            self.held.add((name, mount_id))

    def saw_mountpoint(self, name: str, path: str) -> None:
        with self._lock:
            self.mountpoints[name] = path

    def file(self, path: str) -> None:
        with self._lock:
            self.files.append(path)

    def inspect_host(self, plugin_answers: bool) -> None:
        """Mountpoints of the kit's volumes that are still mounted, or still exist as
        directories after their volume was removed (only on the plugin's own host)."""
        if self.address.unix is None:
            return
        mounted = mounted_paths()
        for name, path in sorted(self.mountpoints.items()):
            if path in mounted:
                self.mounts[path] = mounted[path]
            elif name not in self.volumes and os.path.isdir(path) and plugin_answers:
                self.dirs.append(path)

    @property
    def empty(self) -> bool:
        return not (self.volumes or self.held or self.mounts or self.dirs or self.files)

    def render(self) -> str:
        """The report's last section: what is left and the commands that remove it."""
        if self.empty:
            return "left behind: nothing"
        target = (
            f"--socket {shlex.quote(self.address.unix)}"
            if self.address.unix is not None
            else f"--url {shlex.quote(str(self.address))}"
        )
        out = ["left behind (the kit could not undo these; remove them by hand):"]
        for name, mid in sorted(self.held):
            out.append(
                f"  mount ID {mid[:12]}... of volume {name!r} not released: "
                f"dockvol call {target} unmount {shlex.quote(name)} --id {mid}"
            )
        for name, why in sorted(self.volumes.items()):
            out.append(f"  volume {name!r} ({why}): dockvol call {target} rm {shlex.quote(name)}")
        for path, fstype in sorted(self.mounts.items()):
            how = "fusermount -u" if fstype.startswith("fuse") else "umount"
            out.append(f"  mount {path} ({fstype}) still mounted: {how} {shlex.quote(path)}")
        if self.dirs:
            shown = self.dirs[:5]
            more = f" (and {len(self.dirs) - 5} more)" if len(self.dirs) > 5 else ""
            out.append(
                f"  {len(self.dirs)} directories where removed volumes were mounted, left by "
                f"the plugin{more}: rmdir " + " ".join(shlex.quote(d) for d in shown)
            )
        for path in self.files:
            out.append(f"  file {path}: rm {shlex.quote(path)}")
        return "\n".join(out)

    def to_dict(self) -> dict[str, object]:
        return {
            "volumes": dict(sorted(self.volumes.items())),
            "mount_ids": sorted(f"{n} {m}" for n, m in self.held),
            "mounts": dict(sorted(self.mounts.items())),
            "directories": list(self.dirs),
            "files": list(self.files),
        }
