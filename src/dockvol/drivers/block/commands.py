"""Running the system tools the driver needs: argument lists only, never a shell."""

from __future__ import annotations

from collections.abc import Sequence

from dockvol.host import run as run_tool


def run(
    args: Sequence[str],
    *,
    what: str,
    hint: str,
    timeout: float | None = None,
    ok: tuple[int, ...] = (0,),
) -> str:
    """Run ``args``; return its stdout, or raise :class:`DriverError` saying what failed and what
    to do (``what``: the action, for example "attaching /x.img"; ``hint``: the advice).
    ``timeout``: seconds, by default :func:`dockvol.host.run`'s."""
    if timeout is None:
        return run_tool(*args, what=what, hint=hint, ok=ok)
    return run_tool(*args, what=what, hint=hint, timeout=timeout, ok=ok)
