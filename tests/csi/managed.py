"""Building and enabling the managed CSI plugin in a test engine (shared by the engine tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.packaging.base import base_tarball
from tests.support.engine import Engine

PLUGIN = "dvcsi:1"
BASE_IMAGE = "dockvol-test-base:bookworm"


def build_csi_plugin(
    eng: Engine,
    shared: Path,
    driver: str = "shared",
    *,
    name: str = PLUGIN,
    cwd: Path | None = None,
    **env: str,
) -> str:
    """Build, configure and enable the CSI plugin ``name`` in ``eng``; return its ID.

    ``driver``: a shipped driver, or ``module:Class`` found in ``cwd``; a multi-node driver
    gets ``shared`` as its shared root."""
    eng.ensure_busybox()
    eng.docker("import", str(base_tarball()), BASE_IMAGE, timeout=600)
    r = subprocess.run(
        [sys.executable, "-m", "dockvol", "plugin", "build", name, "--driver", driver,
         "--csi", "--base-image", BASE_IMAGE, "-H", f"unix://{eng.sock}"],
        capture_output=True, text=True, timeout=900, cwd=cwd,
    )  # fmt: skip
    assert r.returncode == 0, f"dockvol plugin build --csi failed:\n{r.stderr}"
    settings = [f"{k}={v}" for k, v in env.items()]
    mounts = eng.docker(
        "plugin", "inspect", "-f", "{{range .Settings.Mounts}}{{.Name}} {{end}}", name
    )
    if "shared" in mounts.stdout.split():
        settings.append(f"shared.source={shared}")
    if settings:
        eng.docker("plugin", "set", name, *settings)
    eng.docker("plugin", "enable", name, timeout=120)
    return eng.docker("plugin", "inspect", "-f", "{{.Id}}", name).stdout.strip()
