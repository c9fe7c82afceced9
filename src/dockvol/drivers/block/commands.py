"""Running the system tools the driver needs: argument lists only, never a shell."""

from __future__ import annotations

from collections.abc import Sequence

from dockvol.host import DEFAULT_TIMEOUT
from dockvol.host import run as run_tool


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
    return run_tool(*args, what=what, hint=hint, timeout=timeout, ok=ok)
