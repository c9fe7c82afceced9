"""Entry point of the ``dockvol`` command: builds the parser from the subcommand modules."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module defines ``register(subparsers)``, which adds its parser (named as the module)
# and sets ``func`` (the handler: args -> exit status). Modules are imported only to build the
# parser; keep their top-level imports light, and import heavy things inside the handler.
SUBCOMMANDS = [
    "dockvol._cli.serve",
    "dockvol._cli.volume",
    "dockvol._cli.tls",
    "dockvol._cli.status",
    "dockvol._cli.plugin",
    "dockvol._cli.call",
    "dockvol._cli.conformance",
]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command``, only that subcommand's (``serve`` starts faster)."""
    parser = argparse.ArgumentParser(
        prog="dockvol", description="Write and run Docker volume plugins."
    )
    from dockvol import __version__

    parser.add_argument("--version", action="version", version=f"dockvol {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = [m for m in SUBCOMMANDS if m.rpartition(".")[2] == command] or SUBCOMMANDS
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args_list = list(sys.argv[1:] if argv is None else argv)
    first = args_list[0] if args_list else None
    args = build_parser(first).parse_args(args_list)
    try:
        status = args.func(args)
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)
