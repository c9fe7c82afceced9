"""``dockvol call ENDPOINT [JSON]``: one request to any volume plugin, exactly as the engine
sends it. The status line (and with -v the request and reply headers) go to stderr, the reply
body, pretty-printed, to stdout."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

USAGE_EXAMPLES = """examples:
  dockvol call --socket /run/docker/plugins/x.sock caps
  dockvol call --plugin x get myvolume
  dockvol call --plugin x create '{"Name": "v", "Opts": {"size": "1G"}}'
  dockvol call --plugin x mount v --id $(openssl rand -hex 32)
  dockvol call --url https://host:9000 --tls-ca ca.pem list

exit status: 0 success, 1 the plugin answered with an error (Err or a status other than
200, or a body the engine cannot read), 2 usage error, 3 the plugin cannot be reached"""


def add_target_args(p: argparse.ArgumentParser) -> None:
    """--socket / --url (+ TLS) / --plugin: where the plugin listens."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--socket", metavar="PATH", help="the plugin's unix socket")
    g.add_argument("--url", help="unix:///path, tcp://host:port, http://... or https://...")
    g.add_argument(
        "--plugin",
        metavar="NAME",
        help="find a legacy plugin as the engine does (/run/docker/plugins, spec files)",
    )
    p.add_argument("--tls-ca", metavar="FILE", help="CA to verify an https:// plugin with")
    p.add_argument("--tls-cert", metavar="FILE", help="client certificate for https://")
    p.add_argument("--tls-key", metavar="FILE", help="client key for https://")


def target_address(args: argparse.Namespace) -> Any:
    """The Address to talk to, or raise ValueError with a message for the user."""
    from dockvol.testing import Address, find_plugin

    if args.socket:
        return Address(unix=args.socket)
    if args.url:
        return Address.parse(
            args.url, tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key
        )
    if args.plugin:
        try:
            return find_plugin(args.plugin)
        except FileNotFoundError as e:
            raise ValueError(str(e)) from e
    raise ValueError("say where the plugin is: --socket PATH, --url URL or --plugin NAME")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "call",
        help="send one request to a volume plugin, as the engine does",
        description="Send one request to any volume plugin shaped exactly as the Docker engine "
        "sends it: POST, empty Host, Accept: application/vnd.docker.plugins.v1.2+json, "
        "User-Agent: Go-http-client/1.1, no Content-Type, a JSON body ending with a newline "
        "(Activate: an empty body); over TCP, Host host:port and Accept-Encoding: gzip.",
        epilog=USAGE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_args(p)
    p.add_argument(
        "endpoint",
        metavar="ENDPOINT",
        help="activate, caps, create, get, list, mount, unmount, path, remove, or a full name "
        "such as VolumeDriver.Get",
    )
    p.add_argument(
        "body",
        metavar="JSON",
        nargs="?",
        help="the request body ('-' reads stdin); a plain word is taken as the volume Name",
    )
    p.add_argument("--id", help="mount ID for mount/unmount given a plain Name (default: random)")
    p.add_argument(
        "-o", "--opt", action="append", default=[], metavar="K=V", help="Opts for create"
    )
    p.add_argument(
        "--empty-body", action="store_true", help="send an empty body (as an engine retry can)"
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (120)")
    p.add_argument("-v", "--verbose", action="store_true", help="show request and reply headers")
    p.set_defaults(func=_call)


def build_body(endpoint: str, text: str | None, mount_id: str | None, opts: list[str]) -> Any:
    """The request body from the command line (see the JSON argument's help)."""
    if text == "-":
        text = sys.stdin.read()
    body: Any = None
    if text is not None:
        try:
            body = json.loads(text)
        except ValueError:
            body = {"Name": text}
    if isinstance(body, dict) and set(body) == {"Name"}:
        if endpoint in ("VolumeDriver.Mount", "VolumeDriver.Unmount"):
            if mount_id is None and endpoint == "VolumeDriver.Unmount":
                raise ValueError("unmount needs the ID its mount used: --id ID")
            from dockvol.testing.suite import new_id

            body["ID"] = mount_id or new_id()
        if endpoint == "VolumeDriver.Create":
            body["Opts"] = dict(_opt(o) for o in opts) if opts else None
    elif opts:
        raise ValueError("-o/--opt goes with a plain volume name: dockvol call create NAME -o k=v")
    return body


def _opt(text: str) -> tuple[str, str]:
    k, sep, v = text.partition("=")
    if not sep or not k:
        raise ValueError(f"option {text!r}: write it as key=value")
    return k, v


def _call(args: argparse.Namespace) -> int:
    from dockvol.testing import WireClient, resolve_endpoint

    try:
        endpoint = resolve_endpoint(args.endpoint)
        address = target_address(args)
        body = build_body(endpoint, args.body, args.id, args.opt)
    except ValueError as e:
        print(f"dockvol call: {e}", file=sys.stderr)
        return 2
    client = WireClient(address, timeout=args.timeout)
    try:
        reply = client.call(endpoint, body, raw=b"" if args.empty_body else None)
    except OSError as e:
        print(
            f"dockvol call: cannot reach the plugin at {address}: {e}; is it running?",
            file=sys.stderr,
        )
        return 3
    err = sys.stderr
    if args.verbose:
        print(f"> POST /{endpoint} HTTP/1.1", file=err)
        for k, v in reply.request_headers:
            print(f"> {k}: {v}", file=err)
        print(f"> {reply.request_body!r}", file=err)
    print(f"HTTP {reply.status} {reply.reason} ({reply.seconds * 1000:.1f} ms)", file=err)
    if args.verbose:
        for k, v in reply.headers:
            print(f"< {k}: {v}", file=err)
    try:
        data = reply.json
    except ValueError:
        text = reply.body.decode("utf-8", "replace")
        print(text if text else "(empty body)")
        print("dockvol call: the body is not JSON: the engine fails this call", file=err)
        return 1
    print(json.dumps(data, indent=2, ensure_ascii=False))
    if not isinstance(data, dict):
        print("dockvol call: the body is not a JSON object: the engine fails this call", file=err)
        return 1
    return 0 if reply.status == 200 and not reply.err else 1
