"""``dockvol conformance``: run the conformance and fault-injection suite against any plugin."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import csi_conformance
from .call import add_target_args, target_address

EPILOG = """Each check is documented in docs/conformance.md. The kit creates volumes named
dvconf-<run>-... and removes them again; the report ends with what it could not remove and the
commands that remove it.

time: every call has a deadline (--call-timeout); a plugin that stops answering is reported as
a hang naming the call, and the run stops once Get and List no longer answer. The whole run has
a budget (--budget): the latency phase, last, shrinks to what is left, and checks that do not
fit are skipped.

destructive mode (--destructive) stops the plugin gracefully (SIGTERM to the process listening
on the unix socket, found with SO_PEERCRED; or your --stop-cmd) and crashes it (SIGKILL to
that process; or your --kill-cmd); --restart-cmd must bring it back on the same socket. A restart command that keeps running (the plugin in the
foreground) is left running in its own session.

exit status: 0 every selected check passed (warnings allowed), 1 some failed, 2 usage error,
3 the plugin cannot be reached"""


def _names(values: list[str]) -> list[str]:
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "conformance",
        help="check any volume plugin against the engine's real behaviour",
        description="Run named checks against a running volume plugin (in any language) "
        "through its socket, as the Docker engine would call it, and print a table: check, "
        "result, why it matters, what to fix, and the engine behaviour it protects.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_args(p)
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--junit", metavar="FILE", help="also write the results as JUnit XML")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAMES",
        help="run only these checks (comma-separated, repeatable)",
    )
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="NAMES",
        help="skip these checks (comma-separated, repeatable)",
    )
    p.add_argument("--list", action="store_true", help="list the checks and exit")
    p.add_argument(
        "--destructive", action="store_true", help="also crash the plugin (needs --restart-cmd)"
    )
    p.add_argument("--restart-cmd", metavar="CMD", help="shell command that restarts the plugin")
    p.add_argument(
        "--kill-cmd",
        metavar="CMD",
        help="shell command that kills the plugin (default: SIGKILL the socket's "
        "listener, found with SO_PEERCRED)",
    )
    p.add_argument(
        "--stop-cmd",
        metavar="CMD",
        help="shell command that stops the plugin gracefully (default: SIGTERM to the "
        "socket's listener; with --kill-cmd and no --stop-cmd that check is skipped)",
    )
    p.add_argument(
        "--restart-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long the restarted plugin may take to answer (30)",
    )
    p.add_argument(
        "--volumes",
        type=int,
        default=1000,
        metavar="N",
        help="volumes for the latency check (1000)",
    )
    p.add_argument(
        "--get-budget-ms",
        type=float,
        default=100.0,
        metavar="MS",
        help="Get p99 budget in milliseconds (100)",
    )
    p.add_argument(
        "--list-budget-ms",
        type=float,
        default=1000.0,
        metavar="MS",
        help="List p99 budget in milliseconds at --volumes volumes (1000)",
    )
    p.add_argument(
        "--idle-seconds",
        type=float,
        default=6.0,
        metavar="SECONDS",
        help="idle time of the keep-alive check (6)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=90.0,
        metavar="SECONDS",
        help="the whole run's time; the latency phase shrinks to fit, checks that do not fit "
        "are skipped (90)",
    )
    p.add_argument(
        "--call-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long one call may take before the plugin is called hung (10; the engine "
        "itself waits 60, 120 for Create and Mount)",
    )
    p.add_argument(
        "--log-dir",
        metavar="DIR",
        help="where the restarted plugin's output goes (default: beside --json or --junit, "
        "else a new directory under the temporary directory)",
    )
    p.add_argument(
        "-o",
        "--opt",
        action="append",
        default=[],
        metavar="K=V",
        help="an option for every volume the kit creates, for plugins that need some; "
        "{name} in a value is replaced by each volume's name, e.g. -o remote=/srv/{name} "
        "(repeatable; default: none, as docker volume create without -o)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only failures and summary")
    csi_conformance.add_args(p)
    p.set_defaults(func=_conformance)


def _conformance(args: argparse.Namespace) -> int:
    from dockvol.testing import Config, Runner, ShellFaults, WireClient, select

    from .kit_report import finish_table, key_values, start_table

    if args.csi_endpoint:  # a CSI plugin: its own suite, the same reports
        return csi_conformance.run(args, _names)
    try:
        checks = select(_names(args.only), _names(args.skip), destructive=args.destructive)
    except KeyError as e:
        print(f"dockvol conformance: {e.args[0]}", file=sys.stderr)
        return 2
    if args.list:
        for c in checks if (args.only or args.skip) else select(destructive=True):
            tag = "  [destructive]" if c.destructive else ""
            print(f"{c.name:<24} {c.title}{tag}")
        return 0
    if args.destructive and not args.restart_cmd:
        print(
            "dockvol conformance: --destructive needs --restart-cmd CMD, a shell command that "
            "starts the plugin again on the same socket",
            file=sys.stderr,
        )
        return 2
    try:
        address = target_address(args)
    except ValueError as e:
        print(f"dockvol conformance: {e}", file=sys.stderr)
        return 2
    client = WireClient(address)
    try:
        client.call("VolumeDriver.Capabilities", {}, timeout=10)
    except OSError as e:
        print(
            f"dockvol conformance: cannot reach the plugin at {address}: {e}; is it running?",
            file=sys.stderr,
        )
        return 3
    opts = key_values(args.opt)
    if opts is None:
        return 2
    config = Config(
        opts=opts or None,
        volumes=args.volumes,
        get_p99_ms=args.get_budget_ms,
        list_p99_ms=args.list_budget_ms,
        idle_seconds=args.idle_seconds,
        restart_timeout=args.restart_timeout,
        budget=args.budget,
        call_timeout=args.call_timeout,
    )
    faults = None
    if args.destructive:
        faults = ShellFaults(
            client, args.restart_cmd, args.kill_cmd, args.restart_timeout, stop_cmd=args.stop_cmd
        )
        faults.log_dir = _log_dir(args)
    runner = Runner(
        client,
        config,
        faults.faults() if faults else None,
        say=lambda text: print(text, file=sys.stderr, flush=True),
    )
    progress = start_table(
        f"{len(checks)} checks against {address}",
        config.budget,
        config.call_timeout,
        quiet=args.quiet,
    )
    results = runner.run(checks, progress)
    note = f"plugin log after restarts: {faults.log_path}" if faults is not None else ""
    return finish_table(args, results, str(address), runner.leftovers, note)


def _log_dir(args: argparse.Namespace) -> Path:
    """Beside the reports: --log-dir, else the directory of --json or --junit, else new."""
    if args.log_dir:
        return Path(args.log_dir)
    for report_file in (args.json, args.junit):
        if report_file:
            return Path(report_file).resolve().parent
    return Path(tempfile.mkdtemp(prefix="dvconf-logs-"))
