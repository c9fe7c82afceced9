"""Entry point of the ``dockvol`` command: builds the parser from the subcommand modules."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module defines ``register(subparsers)``, which adds its parser and sets ``func`` (the
# handler: args -> exit status). Modules are imported only to build the parser; keep their
# top-level imports light, and import heavy things inside the handler.
SUBCOMMANDS = [
    "dockvol._cli.serve",
    "dockvol._cli.volume",
    "dockvol._cli.tls",
    "dockvol._cli.status",
    "dockvol._cli.plugin",
    "dockvol._cli.call",
    "dockvol._cli.conformance",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dockvol", description="Write and run Docker volume plugins."
    )
    from dockvol import __version__

    parser.add_argument("--version", action="version", version=f"dockvol {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)
