"""The mount table, read from ``/proc/<pid>/mountinfo`` (no subprocess)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

_ESCAPE: Final = re.compile(r"\\([0-7]{3})")
SELF: Final = Path("/proc/self/mountinfo")


@dataclass(frozen=True, slots=True)
class MountEntry:
    devnum: str  # "major:minor"
    root: str  # the path inside the filesystem that is mounted (bind mounts: not "/")
    target: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse(text: str) -> list[MountEntry]:
    """Parse mountinfo (see proc(5)): ``id parent major:minor root target opts [tags] - type src``."""
    entries: list[MountEntry] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            entries.append(
                MountEntry(
                    devnum=fields[2],
                    root=_unescape(fields[3]),
                    target=_unescape(fields[4]),
                    fstype=fields[sep + 1],
                    source=_unescape(fields[sep + 2]),
                )
            )
        except (ValueError, IndexError):
            continue  # a line we cannot read is not one of ours
    return entries


def read(path: Path = SELF) -> list[MountEntry]:
    try:
        return parse(path.read_text(errors="surrogateescape"))
    except OSError:
        return []


def mounted_at(target: Path, entries: list[MountEntry] | None = None) -> MountEntry | None:
    """The topmost mount on ``target`` in our namespace, if any."""
    want = os.path.realpath(target)
    found = None
    for e in read() if entries is None else entries:
        if e.target == want:
            found = e  # later lines are mounted on top of earlier ones
    return found


def mounts_of(devnum: str, entries: list[MountEntry] | None = None) -> list[MountEntry]:
    return [e for e in (read() if entries is None else entries) if e.devnum == devnum]


def other_namespaces_using(devnum: str, proc: Path = Path("/proc")) -> list[int]:
    """Pids (one per mount namespace) of namespaces other than ours that mount ``devnum``.

    Containers run in their own namespaces, so this is how a running container is seen from the
    plugin. It reads every process's mountinfo: use it only on rare paths (recovery).
    """
    try:
        ours = os.stat(proc / "self" / "ns" / "mnt").st_ino
    except OSError:
        ours = -1
    seen = {ours}
    users: list[int] = []
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            ns = os.stat(proc / name / "ns" / "mnt").st_ino
        except OSError:
            continue  # exited, or a kernel thread
        if ns in seen:
            continue
        seen.add(ns)
        if any(e.devnum == devnum for e in read(proc / name / "mountinfo")):
            users.append(int(name))
    return users
