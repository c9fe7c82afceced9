"""A driver of the author's own (``--driver module:Class``): its source, shipped in the plugin.

The module (or, for ``pkg.mod:Class``, the whole top-level package ``pkg``) is found as
``dockvol serve`` finds it: in the current directory first, then on the Python path. Its source
is copied into the rootfs at :data:`DRIVERS_DIR`, which is the plugin's working directory, so
the plugin's ``dockvol serve --driver module:Class`` finds it there the same way. The image build
imports it once, so a module that needs a package the image lacks fails the build, not the
plugin's start.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from .docker import StepError

#: Where the driver's source lives in the plugin's rootfs (and the plugin's working directory).
DRIVERS_DIR = "/opt/dockvol/drivers"
#: In the build context: the source to ship, and the module the image build imports.
CONTEXT_DIR = "drivers"
MODULE_FILE = "driver-module"

_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".git", ".mypy_cache", ".pytest_cache")


def is_custom(spec: str) -> bool:
    return ":" in spec


def source_of(spec: str) -> Path:
    """The file or package directory to ship for ``spec`` (already imported by load_driver)."""
    module_name = spec.partition(":")[0]
    top = module_name.split(".")[0]
    module = sys.modules.get(top)
    paths = list(getattr(module, "__path__", []) or [])
    path = Path(paths[0]) if paths else Path(getattr(module, "__file__", "") or "")
    if not path.name:
        raise StepError(
            "choosing the driver",
            f"module {top!r} has no source file to ship",
            "put the driver in a .py file (or a package directory) in the current directory",
        )
    if top == "dockvol":
        raise StepError(
            "choosing the driver",
            f"{spec!r} is inside dockvol itself",
            "use the shipped driver's name (--driver local, block or shared)",
        )
    if any(part in ("site-packages", "dist-packages") for part in path.parts):
        raise StepError(
            "choosing the driver",
            f"module {top!r} is an installed package ({path})",
            "ship drivers as source: put the module in the current directory and build from "
            "there (installed third-party packages are not copied into the plugin)",
        )
    return path


def add_to_context(ctx: Path, spec: str) -> None:
    """Copy the driver's source into the build context; the Dockerfile installs it."""
    src = source_of(spec)
    dest = ctx / CONTEXT_DIR
    dest.mkdir()
    if src.is_dir():
        shutil.copytree(src, dest / src.name, ignore=_SKIP)
    else:
        shutil.copy2(src, dest / src.name)
    (ctx / MODULE_FILE).write_text(spec.partition(":")[0] + "\n")
