"""Shared setup for the benchmarks: import paths, temp dirs, the plugin under test."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # tests/support is the project's engine and plugin harness
    sys.path.insert(0, str(REPO))

from tests.support.plugin import Plugin  # noqa: E402


def tmpdir(prefix: str) -> Path:
    # Short: unix socket paths are limited to 107 bytes.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def start_plugin(sock: Path, base: Path, *extra: str) -> Plugin:
    """``dockvol serve`` with its default settings (log level info, as users run it)."""
    return Plugin.start(sock, base / "root", base / "state", *extra)
