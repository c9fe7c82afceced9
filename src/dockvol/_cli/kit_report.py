"""What ``dockvol conformance`` prints around a run, the same for both kits (Docker volume
plugins and CSI plugins): the ``-o K=V`` options, the table as checks finish, the summary and
the --json / --junit reports.

Imported inside the handlers (it loads the kit's report module): keep conformance.py light.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from dockvol.testing import report
from dockvol.testing.leftovers import Leftovers
from dockvol.testing.verdict import Result

if TYPE_CHECKING:
    from dockvol.testing.csi.runner import CsiLeftovers


def key_values(values: list[str]) -> dict[str, str] | None:
    """The ``-o K=V`` options as a dict; ``None``, after saying how to write it, when one is
    not K=V."""
    out: dict[str, str] = {}
    for o in values:
        k, sep, v = o.partition("=")
        if not sep or not k:
            print(f"dockvol conformance: option {o!r}: write it as key=value", file=sys.stderr)
            return None
        out[k] = v
    return out


def start_table(
    what: str, budget: float, call_timeout: float, *, quiet: bool
) -> Callable[[Result], None]:
    """Say what the run checks and print the table's header: the printer of each result's
    row (only the failures when ``quiet``)."""
    print(
        f"dockvol conformance: {what}, budget {budget:g}s, call timeout {call_timeout:g}s",
        file=sys.stderr,
    )
    if not quiet:
        print(report.header(), flush=True)

    def progress(res: Result) -> None:
        if not quiet or not res.ok:
            print(report.row(res), flush=True)

    return progress


def finish_table(
    args: argparse.Namespace,
    results: Sequence[Result],
    target: str,
    leftovers: Leftovers | CsiLeftovers,
    note: str = "",
) -> int:
    """Print the summary, what was left behind and ``note``, write --json and --junit: the
    exit status (0 when every check passed, else 1)."""
    print()
    print(report.summary(results))
    print(leftovers.render())
    if note:
        print(note)
    if args.json:
        # The CSI leftovers render and serialise (to_dict) as the Docker kit's do.
        report.write_json(args.json, results, target, leftovers)  # type: ignore[arg-type]
    if args.junit:
        report.write_junit(args.junit, results, target)
    return 0 if all(r.ok for r in results) else 1
