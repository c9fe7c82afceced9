"""The filesystems a block volume can have, and the only options that reach mkfs and mount.

Users choose options by name from allow-lists; each value is checked here and turned into
arguments by this module alone, so nothing a user types reaches a command line unvalidated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dockvol import DriverError

MiB: Final = 1 << 20

#: Mount flags any filesystem accepts (``-o mountopts=noatime,discard``).
MOUNT_FLAGS: Final = frozenset(
    {
        "noatime", "nodiratime", "relatime", "strictatime", "lazytime", "nolazytime",
        "discard", "nodiscard", "nosuid", "nodev", "noexec", "sync", "dirsync",
    }
)  # fmt: skip
#: Mount options with a value, per filesystem: name -> (low, high) for a whole number.
MOUNT_VALUES: Final[Mapping[str, Mapping[str, tuple[int, int]]]] = {
    "ext4": {"commit": (1, 300)},
    "xfs": {},
}
_LABEL_RE: Final = re.compile(r"^[A-Za-z0-9_.-]+$")


def parse_mount_options(text: str) -> tuple[str, ...]:
    """``noatime,commit=30`` -> ("noatime", "commit=30"); refuses anything not allow-listed."""
    items = tuple(part.strip() for part in text.split(",") if part.strip())
    known = set(MOUNT_FLAGS) | {k for per_fs in MOUNT_VALUES.values() for k in per_fs}
    for item in items:
        name, _, value = item.partition("=")
        if name not in known or (name in MOUNT_FLAGS) == bool(value):
            raise ValueError(
                f"mount option {item!r} is not allowed; allowed: {', '.join(sorted(MOUNT_FLAGS))}"
                f", and for ext4 commit=SECONDS"
            )
    return items


@dataclass(frozen=True, slots=True)
class MkfsOption:
    check: Callable[[str], str]  # returns the value as it goes on the command line
    args: Callable[[str], list[str]]


def _int_range(low: int, high: int, allowed: Sequence[int] = ()) -> Callable[[str], str]:
    def check(v: str) -> str:
        if not v.isascii() or not v.isdigit() or not low <= int(v) <= high:
            raise ValueError(f"{v!r} must be a whole number from {low} to {high}")
        if allowed and int(v) not in allowed:
            raise ValueError(f"{v!r} must be one of {', '.join(map(str, allowed))}")
        return str(int(v))

    return check


def _label(max_len: int) -> Callable[[str], str]:
    def check(v: str) -> str:
        if not _LABEL_RE.match(v) or len(v) > max_len:
            raise ValueError(f"a label is 1 to {max_len} of A-Z a-z 0-9 _ . -")
        return v

    return check


def _yes_no(v: str) -> str:
    if v not in ("yes", "no"):
        raise ValueError(f"{v!r} must be yes or no")
    return v


#: mkfs options per filesystem (``-o mkfsopts=label=data,reserved=1``).
MKFS_OPTIONS: Final[Mapping[str, Mapping[str, MkfsOption]]] = {
    "ext4": {
        "label": MkfsOption(_label(16), lambda v: ["-L", v]),
        "reserved": MkfsOption(_int_range(0, 50), lambda v: ["-m", v]),
        "inode_ratio": MkfsOption(_int_range(1024, 67108864), lambda v: ["-i", v]),
        "inode_size": MkfsOption(_int_range(128, 1024, (128, 256, 512, 1024)), lambda v: ["-I", v]),
        "journal": MkfsOption(_yes_no, lambda v: [] if v == "yes" else ["-O", "^has_journal"]),
    },
    "xfs": {
        "label": MkfsOption(_label(12), lambda v: ["-L", v]),
        "reflink": MkfsOption(_int_range(0, 1), lambda v: ["-m", f"reflink={v}"]),
        "inode_size": MkfsOption(
            _int_range(256, 2048, (256, 512, 1024, 2048)), lambda v: ["-i", f"size={v}"]
        ),
    },
}


def parse_mkfs_options(text: str) -> tuple[tuple[str, str], ...]:
    """``label=data,reserved=1`` -> (("label", "data"), ("reserved", "1")).

    Names are checked against every filesystem's allow-list here; the value and whether the name
    applies to the chosen filesystem are checked by :func:`mkfs_args` (it knows ``fs``).
    """
    known = {k for per_fs in MKFS_OPTIONS.values() for k in per_fs}
    pairs: list[tuple[str, str]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or name not in known:
            raise ValueError(
                f"mkfs option {part!r} is not allowed; use NAME=VALUE with NAME one of "
                f"{', '.join(sorted(known))}"
            )
        pairs.append((name, value))
    return tuple(pairs)


@dataclass(frozen=True, slots=True)
class Filesystem:
    name: str
    min_size: int
    mkfs: tuple[str, ...]  # the command and the options we always give it

    def mkfs_args(
        self, image: Path, options: Sequence[tuple[str, str]], features: Sequence[str] = ()
    ) -> list[str]:
        """The mkfs command; ``features``: ext4 features to turn on (``-O encrypt``)."""
        allowed = MKFS_OPTIONS[self.name]
        extra: list[str] = [a for f in features for a in ("-O", f)]
        for name, value in options:
            opt = allowed.get(name)
            if opt is None:
                raise DriverError(
                    f"mkfs option {name!r} does not apply to {self.name}; options for "
                    f"{self.name}: {', '.join(sorted(allowed))}"
                )
            try:
                extra += opt.args(opt.check(value))
            except ValueError as exc:
                raise DriverError(f"mkfs option {name}: {exc}") from None
        return [*self.mkfs, *extra, "--", str(image)]

    def mount_options(self, options: Sequence[str]) -> str:
        values = MOUNT_VALUES[self.name]
        for item in options:
            name, _, value = item.partition("=")
            if name in MOUNT_FLAGS:
                continue
            if name not in values:
                raise DriverError(f"mount option {name!r} does not apply to {self.name}")
            low, high = values[name]
            if not value.isdigit() or not low <= int(value) <= high:
                raise DriverError(
                    f"mount option {name} must be a whole number from {low} to {high}"
                )
        return ",".join(options)

    def grow_args(self, device: str, mountpoint: Path) -> list[str]:
        """The command that grows the mounted filesystem to fill its device."""
        if self.name == "xfs":
            return ["xfs_growfs", "--", str(mountpoint)]
        return ["resize2fs", "--", device]


FILESYSTEMS: Final[Mapping[str, Filesystem]] = {
    # Lazy inode table and journal initialisation: mkfs of a 100 GiB sparse image takes tens of
    # milliseconds instead of writing gigabytes. Discard stays on: on a regular file it punches
    # holes (instant on a fresh sparse image) and lets mke2fs mark the inode tables zeroed, so
    # the kernel has no background zeroing to do after the first mount either.
    # -m 0: the volume's size is what containers get (no blocks reserved for root).
    "ext4": Filesystem(
        "ext4",
        8 * MiB,
        (
            "mkfs.ext4",
            "-q",
            "-F",
            "-m",
            "0",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1",
        ),
    ),
    # -K: no discard of a fresh sparse image. xfsprogs refuses filesystems under 300 MiB.
    "xfs": Filesystem("xfs", 300 * MiB, ("mkfs.xfs", "-q", "-f", "-K")),
}


def ext4_bytes(image: Path) -> int | None:
    """The size of the ext4 filesystem in ``image``, from its superblock (``None`` if unreadable).

    Compared with the image's size, it tells whether a grow is still pending."""
    try:
        with open(image, "rb") as f:
            f.seek(1024)
            sb = f.read(0x154)
    except OSError:
        return None
    if len(sb) < 0x154 or sb[0x38:0x3A] != b"\x53\xef":
        return None
    blocks = int.from_bytes(sb[4:8], "little")
    if int.from_bytes(sb[0x60:0x64], "little") & 0x80:  # INCOMPAT_64BIT: high half of the count
        blocks |= int.from_bytes(sb[0x150:0x154], "little") << 32
    return blocks * (1024 << int.from_bytes(sb[24:28], "little"))


#: s_feature_incompat bit of an ext4 made with ``-O encrypt``.
EXT4_INCOMPAT_ENCRYPT: Final = 0x10000


def ext4_encrypted(image: Path) -> bool:
    """Whether the ext4 filesystem in ``image`` has the encrypt feature (from its superblock)."""
    try:
        with open(image, "rb") as f:
            f.seek(1024 + 0x60)
            incompat = f.read(4)
    except OSError:
        return False
    return len(incompat) == 4 and bool(int.from_bytes(incompat, "little") & EXT4_INCOMPAT_ENCRYPT)


def probe(image: Path) -> str | None:
    """The filesystem on ``image`` by its superblock magic (``ext4``, ``xfs``) or ``None``."""
    try:
        with open(image, "rb") as f:
            head = f.read(4)
            f.seek(1080)
            ext_magic = f.read(2)
    except OSError:
        return None
    if head == b"XFSB":
        return "xfs"
    if ext_magic == b"\x53\xef":
        return "ext4"
    return None
