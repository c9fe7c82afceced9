"""Wheels of dockvol and its runtime requirements, made on the host for the plugin image.

Containers have no network here, and a reproducible image should hold exactly what was tested on
the host: so by default every wheel is packed from this Python's installed copy (no network, no
build tools). The image must then run the same Python minor version on the same architecture
(the default base image is chosen that way; the image build checks it). For another Python or
platform, ``fetch_wheels`` downloads binary wheels from the package index with pip instead.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import platform
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path

ROOT_DIST = "dockvol"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(dist: metadata.Distribution) -> Iterator[str]:
    """Names of the runtime requirements that apply to this interpreter (extras excluded)."""
    for name, _ in _requirements(dist):
        yield name


def _requirements(
    dist: metadata.Distribution, extras: Iterable[str] = ()
) -> Iterator[tuple[str, str]]:
    """(name, version specifier) of the runtime requirements for this interpreter, with those
    of the named ``extras`` (``csi``)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip always vendors it
        from pip._vendor.packaging.requirements import (  # type: ignore[assignment,no-redef,unused-ignore]
            Requirement,
        )
    for text in dist.requires or ():
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
            yield req.name, str(req.specifier)


def closure(root: str = ROOT_DIST, extras: Iterable[str] = ()) -> list[metadata.Distribution]:
    """``root`` (with its ``extras``) and every installed distribution it needs at run time,
    in a stable order."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [root]
    first = True
    while todo:
        name = _norm(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise RuntimeError(
                f"{name} is required by dockvol but not installed in {sys.executable}: "
                f"pip install {name}"
            ) from None
        seen[name] = dist
        todo.extend(n for n, _ in _requirements(dist, extras if first else ()))
        first = False
    return [seen[k] for k in sorted(seen)]


def _editable(dist: metadata.Distribution) -> bool:
    text = dist.read_text("direct_url.json")
    if not text:
        return False
    return bool(json.loads(text).get("dir_info", {}).get("editable"))


def _installed_files(dist: metadata.Distribution) -> Iterator[tuple[str, Path]]:
    """(name in the wheel, file on disk) for the files a regular install put in site-packages."""
    for f in dist.files or ():
        parts = f.parts
        if not parts or parts[0] == ".." or "__pycache__" in parts:
            continue  # scripts live outside site-packages; bytecode is rebuilt in the image
        if (
            parts[-1] in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")
            and len(parts) == 2
            and parts[0].endswith(".dist-info")
        ):
            continue
        path = Path(str(dist.locate_file(f)))
        if path.is_file():
            yield f.as_posix(), path


def _package_files(dist: metadata.Distribution) -> Iterator[tuple[str, Path]]:
    """Files of an editable install: the importable packages it names, read from the tree."""
    import importlib.util

    top = (dist.read_text("top_level.txt") or "").split() or [ROOT_DIST]
    for pkg in top:
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"cannot find the sources of {pkg} for an editable install")
        base = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(base)
            if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc":
                yield f"{pkg}/{rel.as_posix()}", path


def _dist_info_name(dist: metadata.Distribution) -> str:
    """The installed .dist-info directory's name (its case can differ from the project's)."""
    for f in dist.files or ():
        if len(f.parts) == 2 and f.parts[0].endswith(".dist-info"):
            return f.parts[0]
    return f"{_norm(dist.metadata['Name']).replace('-', '_')}-{dist.version}.dist-info"


def pack_wheel(dist: metadata.Distribution, dest: Path) -> Path:
    """Write a wheel of an installed distribution into ``dest`` and return its path."""
    name = _norm(dist.metadata["Name"]).replace("-", "_")
    info = _dist_info_name(dist)
    entries: dict[str, bytes] = {}
    if _editable(dist):
        for arc, path in _package_files(dist):
            entries[arc] = path.read_bytes()
        entries[f"{info}/METADATA"] = (dist.read_text("METADATA") or "").encode()
    else:
        for arc, path in _installed_files(dist):
            entries[arc] = path.read_bytes()
    binary = any(arc.endswith(".so") for arc in entries)
    py = "cp{}{}".format(*sys.version_info[:2])
    tag = f"{py}-{py}-linux_{platform.machine()}" if binary else "py3-none-any"
    entries[f"{info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: dockvol\nRoot-Is-Purelib: {str(not binary).lower()}\n"
        f"Tag: {tag}\n"
    ).encode()
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for arc, data in entries.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow((arc, f"sha256={digest}", len(data)))
    writer.writerow((f"{info}/RECORD", "", ""))
    entries[f"{info}/RECORD"] = record.getvalue().encode()
    out = dest / f"{name}-{dist.version}-{tag}.whl"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for arc, data in entries.items():
            # A fixed timestamp: the same install gives the same wheel.
            zf.writestr(zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return out


def pack_installed(dest: Path, root: str = ROOT_DIST, extras: Iterable[str] = ()) -> list[Path]:
    """Wheels of ``root`` and its requirements from this Python's installed copies (offline)."""
    dest.mkdir(parents=True, exist_ok=True)
    return [pack_wheel(d, dest) for d in closure(root, extras)]


def fetch_command(
    dest: Path, python_version: str, platforms: Iterable[str], requirements: Iterable[str]
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--only-binary=:all:",
        "--dest",
        str(dest),
        "--python-version",
        python_version,
        "--implementation",
        "cp",
    ]
    for p in platforms:
        cmd += ["--platform", p]
    return [*cmd, *requirements]


def manylinux_platforms(machine: str) -> list[str]:
    """pip platform tags a glibc Linux of ``machine`` (x86_64, aarch64, ...) accepts."""
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(36, 16, -1)]
    return [*tags, f"manylinux2014_{machine}", f"linux_{machine}"]


def fetch_wheels(
    dest: Path, python_version: str, machine: str, extras: Iterable[str] = ()
) -> list[Path]:
    """dockvol packed from this install, its requirements downloaded for another target."""
    dest.mkdir(parents=True, exist_ok=True)
    dists = closure(extras=extras)
    own = pack_wheel(dists[[_norm(d.metadata["Name"]) for d in dists].index(ROOT_DIST)], dest)
    reqs = sorted(n + spec for n, spec in _requirements(metadata.distribution(ROOT_DIST), extras))
    r = subprocess.run(
        fetch_command(dest, python_version, manylinux_platforms(machine), reqs),
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise RuntimeError(f"pip download failed:\n{r.stderr.strip()}")
    return [own, *sorted(p for p in dest.glob("*.whl") if p != own)]
