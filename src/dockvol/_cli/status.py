"""``dockvol status [--socket PATH]``: a running plugin's volumes, mounts and health, for a person."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

#: Where to look when no --socket is given: the engine's discovery path, then the admin socket
#: ``serve --tcp`` uses (out of the engine's sight).
SEARCH = ("/run/docker/plugins/{name}.sock", "/run/dockvol/{name}.sock")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "status",
        help="show a running plugin's volumes, mounts and health",
        description="Ask a running plugin (POST /Dockvol.Status on its unix socket) for its "
        "volumes, active mounts and the result of its last reconciliation. Exit status: 0 "
        "healthy, 1 unreachable, 2 running with problems.",
    )
    p.add_argument("--socket", type=Path, help="the plugin's unix socket")
    p.add_argument("--name", default="dockvol", help="plugin name, to find its socket (dockvol)")
    p.add_argument("--json", action="store_true", help="print the plugin's answer as JSON")
    p.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    candidates = [args.socket] if args.socket else [Path(s.format(name=args.name)) for s in SEARCH]
    sock = next((c for c in candidates if c.exists()), candidates[0])
    try:
        reply = fetch(sock)
    except OSError as exc:
        where = ", ".join(str(c) for c in candidates)
        print(
            f"dockvol status: cannot reach the plugin at {where}: {exc.strerror or exc}; "
            "is it running? (use --socket to point at its socket)",
            file=sys.stderr,
        )
        return 1
    if "Err" in reply:
        print(f"dockvol status: the plugin answered: {reply['Err']}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(reply, indent=2, sort_keys=True))
    else:
        print(render(reply, sock))
    health = reply.get("health") or {}
    return 0 if health.get("ok", health.get("ready")) else 2


def fetch(sock: Path, timeout: float = 10.0) -> dict[str, Any]:
    """``POST /Dockvol.Status`` over the unix socket."""
    from dockvol._cli.plugin_socket import post

    return post(sock, "Dockvol.Status", {}, timeout)


def _safe(text: object) -> str:
    """Names are arbitrary strings: never let one move the cursor or reorder a terminal line."""
    s = str(text)
    return s if s.isprintable() else ascii(s)


def render(reply: dict[str, Any], sock: Path) -> str:
    health = reply.get("health") or {}
    volumes = reply.get("volumes") or []
    problems = health.get("problems") or []
    state = "ready" if health.get("ready") else "NOT READY"
    if health.get("ready") and (problems or health.get("ok") is False):
        state = "ready, with problems"
    lines = [
        f"plugin at {sock}: {state}",
        f"  driver:   {_safe(reply.get('driver', '?'))} (scope {_safe(reply.get('scope', '?'))})",
        f"  volumes:  {len(volumes)}, active mounts: {reply.get('active_mounts', 0)}",
        f"  reconciled at {_safe(health.get('reconciled_at') or 'never')}"
        f", mount records kept: {health.get('recovered_mounts', 0)}",
    ]
    for p in problems:
        lines.append(f"  problem:  {_safe(p)}")
    for name, why in sorted((reply.get("fenced") or {}).items()):
        lines.append(
            f"  FENCED:   {_safe(name)}: {_safe(why)}; its containers here get write errors: "
            "stop them, restart the plugin, then start them again"
        )
    for name, why in sorted((reply.get("unfenced") or {}).items()):
        lines.append(
            f"  UNFENCED: {_safe(name)}: {_safe(why)}; its driver cannot stop writes: stop its "
            "containers here before another node uses it"
        )
    lines += _suspects(reply, volumes, sock)
    if volumes:
        width = min(40, max(4, *(len(_safe(v.get("name", ""))) for v in volumes)))
        lines.append("")
        lines.append(f"{'NAME':<{width}}  MOUNTS  MOUNTPOINT")
        for v in sorted(volumes, key=lambda v: str(v.get("name", ""))):
            name = _safe(v.get("name", ""))
            mp = _safe(v.get("mountpoint") or "-")
            lines.append(f"{name:<{width}}  {v.get('mounts', 0):>6}  {mp}")
    return "\n".join(lines)


def _suspects(reply: dict[str, Any], volumes: list[dict[str, Any]], sock: Path) -> list[str]:
    """Mount records the engine may have given up on (it does when the plugin was down through
    its ~15 s of Unmount retries, so only records kept across a restart can be stale). A plugin
    with --docker-host releases those itself; without it, a person checks and releases them."""
    if reply.get("healing") or not (reply.get("health") or {}).get("recovered_mounts"):
        return []
    held = sorted(str(v.get("name", "")) for v in volumes if v.get("mounts"))
    if not held:
        return []
    out = [
        "",
        "mount records kept across a restart: if 'docker ps -a --filter volume=NAME' shows no "
        "container of NAME outside 'exited', the engine gave up on its Unmount; release it with:",
    ]
    for name in held:
        out.append(f"  dockvol volume release --socket {sock} {shlex.quote(_safe(name))} --all")
    out.append(
        "(or run the plugin with --docker-host unix:///var/run/docker.sock to do this itself)"
    )
    return out
