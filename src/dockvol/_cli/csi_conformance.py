"""``dockvol conformance --csi-endpoint unix:///path/csi.sock``: the CSI suite from the CLI.

conformance.py registers the flags (:func:`add_args`) and hands a run with ``--csi-endpoint``
to :func:`run`; the reports are the Docker-protocol kit's (text, --json, --junit).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--csi-endpoint",
        metavar="ENDPOINT",
        help="check a CSI plugin (any language) instead: unix:///path/csi.sock or a bare path",
    )
    p.add_argument(
        "--csi-staging-dir",
        metavar="DIR",
        help="where the kit makes staging paths (default: a new temporary directory); the "
        "plugin must see the same paths",
    )
    p.add_argument(
        "--csi-target-dir",
        metavar="DIR",
        help="where the kit makes the parents of target paths (default: a new temporary directory)",
    )


def run(args: argparse.Namespace, names: Any) -> int:
    from dockvol.testing.csi import Config, CsiClient, CsiRunner, select

    from .kit_report import finish_table, key_values, start_table

    if args.destructive or args.socket or args.url or args.plugin:
        print(
            "dockvol conformance: --csi-endpoint checks a CSI plugin; --destructive, --socket, "
            "--url and --plugin are for Docker volume plugins (run the two kits separately)",
            file=sys.stderr,
        )
        return 2
    try:
        checks = select(names(args.only), names(args.skip))
    except KeyError as e:
        print(f"dockvol conformance: {e.args[0]}", file=sys.stderr)
        return 2
    if args.list:
        for c in checks:
            print(f"{c.name:<24} {c.title}")
        return 0
    params = key_values(args.opt)
    if params is None:
        return 2
    try:
        client = CsiClient(args.csi_endpoint)
    except ValueError as e:
        print(f"dockvol conformance: {e}", file=sys.stderr)
        return 2
    from dockvol._csi import csi_pb2 as pb

    try:
        client.call("GetPluginInfo", pb.GetPluginInfoRequest(), min(args.call_timeout, 10.0))
    except (ConnectionError, TimeoutError) as e:
        print(
            f"dockvol conformance: cannot reach the CSI plugin at {args.csi_endpoint}: {e}; "
            "is it running?",
            file=sys.stderr,
        )
        return 3
    config = Config(
        parameters=params,
        call_timeout=args.call_timeout,
        budget=args.budget,
        staging_dir=Path(args.csi_staging_dir) if args.csi_staging_dir else None,
        target_dir=Path(args.csi_target_dir) if args.csi_target_dir else None,
    )
    runner = CsiRunner(client, config, say=lambda t: print(t, file=sys.stderr, flush=True))
    progress = start_table(
        f"{len(checks)} CSI checks against {args.csi_endpoint}",
        config.budget,
        config.call_timeout,
        quiet=args.quiet,
    )
    try:
        results = runner.run(checks, progress)
    finally:
        runner.close()
    return finish_table(args, results, str(args.csi_endpoint), runner.leftovers)
