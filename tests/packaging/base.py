"""A Python base image without Docker Hub: debootstrap, cached between runs (ENGINE.md).

debootstrap takes about a minute and 300 MB, so its result is kept as a tarball in
``$DOCKVOL_TEST_CACHE`` (default /var/cache/dockvol-test), keyed by release and package list,
and imported into each test engine with ``docker import``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

RELEASE = "bookworm"
# python3 for dockvol; e2fsprogs and xfsprogs for the block driver (mount/losetup are in minbase).
PACKAGES = ("python3", "e2fsprogs", "xfsprogs")
# Not needed in a plugin rootfs: keeps the tarball (and every vfs layer copy) small.
_STRIP = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/cache/debconf",
)


def cache_dir() -> Path:
    return Path(os.environ.get("DOCKVOL_TEST_CACHE", "/var/cache/dockvol-test"))


def debian_mirror() -> str:
    """The Debian mirror apt already uses (the only network here)."""
    paths = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in paths:
        try:
            text = path.read_text()
        except OSError:
            continue
        for m in re.finditer(r"^\s*(?:deb\s+(?:\[[^\]]*\]\s+)?(\S+)|URIs:\s*(\S+))", text, re.M):
            url = m.group(1) or m.group(2)
            if "security" not in url and url.startswith("http"):
                return url
    return "http://deb.debian.org/debian"


def base_tarball() -> Path:
    """The cached rootfs tarball; built (once, under a lock) if missing."""
    key = hashlib.sha256(" ".join((RELEASE, *PACKAGES, *_STRIP)).encode()).hexdigest()[:12]
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"debootstrap-{RELEASE}-{key}.tar"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tarball.exists():
            _build(tarball)
    return tarball


def _build(tarball: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap not found: apt-get install -y debootstrap (see .ci/run)")
    work = Path(tempfile.mkdtemp(prefix="dvdbs", dir=tarball.parent))
    try:
        root = work / "root"
        r = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                RELEASE,
                str(root),
                debian_mirror(),
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if r.returncode != 0:
            raise RuntimeError(f"debootstrap failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
        pack(root, tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def pack(root: Path, tarball: Path) -> None:
    """Strip what a plugin does not need, then tar atomically."""
    for rel in _STRIP:
        shutil.rmtree(root / rel, ignore_errors=True)
    tmp = tarball.with_suffix(".tmp")
    subprocess.run(["tar", "-C", str(root), "-cf", str(tmp), "."], check=True)
    tmp.rename(tarball)
