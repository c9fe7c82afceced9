"""docs/conformance.md's CSI check sections, rendered from the CSI checks' own metadata.

    python -m dockvol.testing.csi.docs [docs/conformance.md]    # rewrite the generated part

Its own markers (beside the Docker-protocol checks' part, which ``dockvol.testing.docs``
renders); the text around them is written by hand. A test fails when the part is not current.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..docs import render_one
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
    block = render(checks)
    if BEGIN in page and END in page:
        head, rest = page.split(BEGIN, 1)
        return head + block + rest.split(END, 1)[1]
    return page.rstrip("\n") + "\n\n" + block + "\n"


def main(argv: list[str] | None = None) -> int:
    from .checks import SUITE

    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else "docs/conformance.md")
    page = path.read_text()
    new = updated(page, SUITE)
    if new != page:
        path.write_text(new)
        print(f"{path}: CSI check sections rewritten from the checks' metadata")
    else:
        print(f"{path}: already current")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
