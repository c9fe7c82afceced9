"""Small helpers shared by the engine tests."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.support.engine import BUSYBOX_IMAGE, Engine

T = TypeVar("T")


def inspect(engine: Engine, volume: str) -> dict[str, Any]:
    out = json.loads(engine.docker("volume", "inspect", volume).stdout)
    assert len(out) == 1, out
    return out[0]  # type: ignore[no-any-return]


def status(engine: Engine, volume: str) -> dict[str, Any]:
    st = inspect(engine, volume)["Status"]
    assert isinstance(st, dict), st
    return st


def volume_names(engine: Engine, driver: str = "dockvol") -> list[str]:
    out = engine.docker(
        "volume", "ls", "--filter", f"driver={driver}", "--format", "{{json .}}"
    ).stdout
    return [json.loads(line)["Name"] for line in out.splitlines() if line.strip()]


def run_detached(
    engine: Engine,
    containers: list[str],
    name: str,
    volume: str,
    target: str = "/data",
    extra: tuple[str, ...] = (),
) -> str:
    """A running container holding ``volume`` at ``target`` (``sleep``, no network)."""
    containers.append(name)
    engine.docker(
        "run", "-d", "--name", name, "--network", "none", "-v", f"{volume}:{target}",
        *extra, BUSYBOX_IMAGE, "sleep", "600",
    )  # fmt: skip
    return name


def run_once(engine: Engine, volume: str, script: str, target: str = "/data") -> str:
    """Run ``sh -c script`` in a throwaway container with ``volume`` mounted; its stdout."""
    return engine.docker(
        "run", "--rm", "--network", "none", "-v", f"{volume}:{target}",
        BUSYBOX_IMAGE, "sh", "-c", script,
    ).stdout  # fmt: skip


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    """Poll ``probe`` until it returns something truthy (a condition, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def tree(top: Path) -> set[tuple[str, str]]:
    """Every path below ``top`` (relative) with its kind, without following symlinks."""
    out: set[tuple[str, str]] = set()
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            kind = "link" if p.is_symlink() else "dir" if p.is_dir() else "file"
            out.add((str(p.relative_to(top)), kind))
    return out
