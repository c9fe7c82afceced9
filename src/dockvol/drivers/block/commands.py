"""Running the system tools the driver needs: argument lists only, never a shell."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Sequence
from typing import Final

from dockvol import DriverError
from dockvol._sdk.secrets import scrubbed_environ

log = logging.getLogger("dockvol.drivers.block")

#: Long enough for mkfs of a large sparse image; well inside the engine's 2-minute Create timeout.
DEFAULT_TIMEOUT: Final = 90.0


def run(
    args: Sequence[str],
    *,
    what: str,
    hint: str,
    timeout: float = DEFAULT_TIMEOUT,
    ok: tuple[int, ...] = (0,),
) -> str:
    """Run ``args``; return its stdout, or raise :class:`DriverError` saying what failed and what
    to do (``what``: the action, for example "attaching /x.img"; ``hint``: the advice)."""
    log.debug("running %s", " ".join(args))
    try:
        proc = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            # Untranslated messages (we quote them to the user); no DOCKVOL_SECRET_* for tools.
            env={**scrubbed_environ(), "LC_ALL": "C", "LANG": "C"},
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        raise DriverError(
            f"{what} failed: the command {args[0]!r} is not installed; install it on the plugin's "
            f"host (e2fsprogs, xfsprogs, util-linux) and try again"
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
