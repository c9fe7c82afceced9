"""Helpers for driver code that touches the host: the same ones dockvol's own drivers use.

- :func:`run` runs a system tool (argument list, never a shell) and turns its failure into a
  :class:`~dockvol.DriverError` that quotes the tool and says what to do.
- :func:`child`, :func:`is_real_dir`, :func:`remove_tree` and :func:`mounts_under` keep a driver
  inside its root: no symlink followed out of it, nothing deleted through a live mount.
- :func:`fsync_dir` and :func:`write_atomic` make a file or a directory entry durable.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Final

from ._sdk.errors import DriverError
from ._sdk.fs import child, is_real_dir, mounts_under, remove_tree
from ._sdk.secrets import scrubbed_environ

__all__ = [
    "child",
    "fsync_dir",
    "is_real_dir",
    "mounts_under",
    "remove_tree",
    "run",
    "write_atomic",
]

log = logging.getLogger("dockvol.host")

#: Long enough for mkfs of a large sparse image; well inside the engine's 2-minute Create timeout.
DEFAULT_TIMEOUT: Final = 90.0


def run(
    *args: str,
    what: str = "",
    hint: str = "check the plugin's log and its host, then try again",
    timeout: float = DEFAULT_TIMEOUT,
    ok: tuple[int, ...] = (0,),
) -> str:
    """Run ``args`` and return its stdout, or raise :class:`~dockvol.DriverError` saying what
    failed (``what``, by default the command) and what to do (``hint``).

    Tools get an untranslated locale (their messages are quoted to the user) and no
    ``DOCKVOL_SECRET_*`` variables: a secret reaches only the driver code that resolves it.
    """
    what = what or f"running {os.path.basename(args[0])}"
    log.debug("running %s", " ".join(args))
    try:
        proc = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**scrubbed_environ(), "LC_ALL": "C", "LANG": "C"},
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        raise DriverError(
            f"{what} failed: the command {args[0]!r} is not installed; install it on the "
            "plugin's host and try again"
        ) from None
    except subprocess.TimeoutExpired:
        raise DriverError(
            f"{what} failed: {args[0]} did not finish within {timeout:.0f}s; {hint}"
        ) from None
    except OSError as exc:
        raise DriverError(f"{what} failed: cannot run {args[0]}: {exc.strerror}; {hint}") from None
    if proc.returncode not in ok:
        tool = os.path.basename(args[0])
        detail = _last_lines(proc.stderr or proc.stdout) or f"exit status {proc.returncode}"
        detail = detail.removeprefix(f"{tool}: ")  # most tools name themselves already
        raise DriverError(f"{what} failed: {tool}: {detail}; {hint}")
    return proc.stdout


def _last_lines(text: str, n: int = 2) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-n:])


def fsync_dir(directory: Path) -> None:
    """Make the entries of ``directory`` (a file created, renamed or deleted in it) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old file or the new one, whole,
    and the new one is durable when this returns."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
