"""docs/conformance.md's CSI check sections, rendered from the CSI checks' own metadata.

    python -m dockvol.testing.csi.docs [docs/conformance.md]    # rewrite the generated part

Its own markers (beside the Docker-protocol checks' part, which ``dockvol.testing.docs``
renders); the text around them is written by hand. A test fails when the part is not current.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..docs import render_one, rewrite, splice
from ..verdict import Check

BEGIN = (
    "<!-- BEGIN GENERATED CSI CHECKS: python -m dockvol.testing.csi.docs; do not edit by hand -->"
)
END = "<!-- END GENERATED CSI CHECKS -->"
COMMAND = "python -m dockvol.testing.csi.docs docs/conformance.md"


def render(checks: Iterable[Check[Any]]) -> str:
    # The spec reference travels in the check's ``engine`` field: say "Spec" in the docs.
    parts = [render_one(k).replace("**Engine:**", "**Spec:**") for k in checks]
    return "\n\n".join([BEGIN, *parts, END])


def updated(page: str, checks: Iterable[Check[Any]]) -> str:
    """``page`` with its CSI part replaced (appended when it has none)."""
    return splice(page, render(checks), BEGIN, END)


def main(argv: list[str] | None = None) -> int:
    from .checks import SUITE

    return rewrite(argv, lambda page: updated(page, SUITE), "CSI check sections")


if __name__ == "__main__":
    raise SystemExit(main())
