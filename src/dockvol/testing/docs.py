"""docs/conformance.md's per-check sections, rendered from the checks' own metadata.

    python -m dockvol.testing.docs [docs/conformance.md]    # rewrite the generated part

The generated part lies between two marker lines; the rest of the page is written by hand.
A test fails when the page is not current, naming this command.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .verdict import Check

BEGIN = "<!-- BEGIN GENERATED CHECKS: python -m dockvol.testing.docs; do not edit by hand -->"
END = "<!-- END GENERATED CHECKS -->"
COMMAND = "python -m dockvol.testing.docs docs/conformance.md"
WIDTH = 100


def _para(label: str, text: str) -> list[str]:
    return textwrap.wrap(f"**{label}:** {text}", WIDTH, break_on_hyphens=False)


def render_one(chk: Check[Any]) -> str:
    title = f"*{chk.title}.*" + (" *Destructive.*" if chk.destructive else "")
    parts = [[f"### {chk.name}"], [title]]
    parts += [
        _para("Checks", chk.checks),
        _para("Why", chk.why),
        _para("Engine", chk.engine),
        _para("Fix", chk.fix),
    ]
    if chk.tolerated:
        parts.append(_para("Tolerated (a warning)", chk.tolerated))
    return "\n\n".join("\n".join(p) for p in parts)


def render(checks: Iterable[Check[Any]]) -> str:
    """The generated part, markers included."""
    return "\n\n".join([BEGIN, *(render_one(k) for k in checks), END])


def updated(page: str, checks: Iterable[Check[Any]]) -> str:
    """``page`` with its generated part replaced (appended when it has none)."""
    return splice(page, render(checks), BEGIN, END)


def splice(page: str, block: str, begin: str, end: str) -> str:
    """``page`` with the part from ``begin`` to ``end`` replaced by ``block`` (appended when
    it has none): ``block`` holds the markers."""
    if begin in page and end in page:
        head, rest = page.split(begin, 1)
        return head + block + rest.split(end, 1)[1]
    return page.rstrip("\n") + "\n\n" + block + "\n"


def rewrite(argv: list[str] | None, update: Callable[[str], str], what: str) -> int:
    """The generators' command: rewrite the page named in ``argv`` with ``update``."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else "docs/conformance.md")
    page = path.read_text()
    new = update(page)
    if new != page:
        path.write_text(new)
        print(f"{path}: {what} rewritten from the checks' metadata")
    else:
        print(f"{path}: already current")
    return 0


def main(argv: list[str] | None = None) -> int:
    from .catalog import SUITE

    return rewrite(argv, lambda page: updated(page, SUITE), "per-check sections")


if __name__ == "__main__":
    raise SystemExit(main())
