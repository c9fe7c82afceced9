"""Every check of the Docker volume suite, listed explicitly, in the order a run takes them.

Nothing registers itself on import: this tuple is the suite. docs/conformance.md's per-check
sections are rendered from it (``python -m dockvol.testing.docs``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from . import checks as c
from . import faults as f
from . import names as n
from .suite import Context
from .verdict import Check

SUITE: tuple[Check[Context], ...] = (
    # the wire
    c.activate,
    c.capabilities,
    c.request_tolerance,
    c.keep_alive,
    c.empty_body,
    c.reply_shape,
    c.error_replies,
    # names
    n.names,
    n.names_shell,
    # volumes
    c.get_created_at,
    c.get_status,
    c.get_not_found,
    c.create_idempotent,
    c.mount_path,
    c.mount_same_id,
    c.remove_while_mounted,  # before the checks that observe "in use" through it
    c.unmount_unknown_id,
    c.mount_same_id_counted,
    c.mount_concurrent,
    c.list_consistency,
    c.answers_while_mounting,
    # destructive (only with a way to restart the plugin)
    f.stop_removes_socket,
    f.crash_while_mounted,
    f.crash_during_burst,
    n.names_restart,
    # last: it shrinks to what is left of the run's time budget
    c.latency,
)

#: The checks by name (read-only).
CHECKS: Mapping[str, Check[Context]] = MappingProxyType({k.name: k for k in SUITE})
assert len(CHECKS) == len(SUITE), "two checks share a name"


def select(
    only: Iterable[str] = (), skip: Iterable[str] = (), destructive: bool = False
) -> list[Check[Context]]:
    """The checks to run, in suite order; unknown names raise ``KeyError`` with the choices."""
    only, skip = list(only), list(skip)
    for name in [*only, *skip]:
        if name not in CHECKS:
            raise KeyError(f"unknown check {name!r}; the checks are: {', '.join(CHECKS)}")
    chosen = [k for k in SUITE if not only or k.name in only]
    if not destructive:
        chosen = [k for k in chosen if not k.destructive]
    return [k for k in chosen if k.name not in skip]
