"""``dockvol volume resize|release``: act on one volume through the plugin's socket."""

from __future__ import annotations

import argparse
import sys
from typing import Any

DEFAULT_SOCKET = "/run/docker/plugins/dockvol.sock"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "volume",
        help="manage volumes of a running plugin",
        description="Act on the volumes of a running dockvol plugin, through its socket.",
    )
    sub = parser.add_subparsers(dest="volume_command", metavar="ACTION", required=True)
    r = sub.add_parser(
        "resize",
        help="grow a volume (block driver)",
        description="Grow a volume to SIZE (grow only). Works while the volume is detached, and "
        "while attached where the filesystem allows it.",
    )
    r.add_argument(
        "--socket",
        default=DEFAULT_SOCKET,
        help=f"the plugin's unix socket (default: {DEFAULT_SOCKET})",
    )
    r.add_argument("name", metavar="NAME", help="the volume's name, as docker volume ls shows it")
    r.add_argument("size", metavar="SIZE", help="the new size: 512M, 10G, 1T (binary units)")
    r.set_defaults(func=_resize)

    rel = sub.add_parser(
        "release",
        help="forget mount records the engine will never end",
        description="Drop mount records of a volume that no container uses any more (the engine "
        "gives up on an Unmount when the plugin was down for ~15 s, and the volume then stays "
        "'in use'). Check first that no container uses it: docker ps -a --filter volume=NAME.",
    )
    rel.add_argument(
        "--socket",
        default=DEFAULT_SOCKET,
        help=f"the plugin's unix socket (default: {DEFAULT_SOCKET})",
    )
    rel.add_argument("name", metavar="NAME", help="the volume's name")
    rel.add_argument("ids", metavar="ID", nargs="*", help="mount IDs to release (see inspect)")
    rel.add_argument("--all", action="store_true", help="release every mount ID of the volume")
    rel.set_defaults(func=_release)


def _resize(args: argparse.Namespace) -> int:
    from dockvol._sdk.options import parse_size

    try:
        wanted = parse_size(args.size)
    except ValueError as exc:
        print(f"dockvol volume resize: {exc}", file=sys.stderr)
        return 2
    try:
        reply = _post(args.socket, "/Dockvol.Resize", {"Name": args.name, "Size": args.size})
    except OSError as exc:
        print(
            f"dockvol volume resize: cannot reach the plugin at {args.socket}: "
            f"{exc.strerror or exc}; is it running? (use --socket to point at its socket)",
            file=sys.stderr,
        )
        return 1
    err = reply.get("Err")
    if err:
        print(f"dockvol volume resize: {err}", file=sys.stderr)
        return 1
    size = reply.get("Size", wanted)
    print(f"volume {args.name!r} resized to {_human(size)} ({size} bytes)")
    return 0


def _release(args: argparse.Namespace) -> int:
    if bool(args.ids) == args.all:
        print(
            "dockvol volume release: name the mount IDs to release, or pass --all", file=sys.stderr
        )
        return 2
    body: dict[str, Any] = {"Name": args.name}
    if args.ids:
        body["IDs"] = args.ids
    try:
        reply = _post(args.socket, "/Dockvol.Release", body)
    except OSError as exc:
        print(
            f"dockvol volume release: cannot reach the plugin at {args.socket}: "
            f"{exc.strerror or exc}; is it running? (use --socket to point at its socket)",
            file=sys.stderr,
        )
        return 1
    err = reply.get("Err")
    if err:
        print(f"dockvol volume release: {err}", file=sys.stderr)
        return 1
    released = reply.get("Released", [])
    print(f"volume {args.name!r}: released {len(released)} mount ID(s)")
    return 0


def _post(sock_path: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    from dockvol._cli.plugin_socket import post

    # A resize may fsck and grow a large filesystem: allow it the engine's longest timeout.
    return post(sock_path, endpoint, body, timeout=130)


def _human(size: object) -> str:
    if not isinstance(size, int):
        return str(size)
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return f"{size} bytes"
