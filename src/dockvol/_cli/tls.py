"""``dockvol tls``: create a small PKI for TCP + mutual TLS, and print the engine's spec file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "tls",
        help="create certificates for serving over TCP with mutual TLS",
        description="Certificates for 'dockvol serve --tcp HOST:PORT --tls DIR'.",
    )
    sub = p.add_subparsers(dest="tls_command", metavar="ACTION", required=True)

    init = sub.add_parser(
        "init",
        help="create a CA, a server certificate and a client certificate for the engine",
        description=(
            "Create DIR/ca.pem, server.pem, client.pem and their keys (0600). The server "
            "certificate covers every --host (DNS names or IP addresses; default: localhost, "
            "127.0.0.1, ::1 and this host's name): the engine connects to one of them."
        ),
    )
    init.add_argument("dir", type=Path, metavar="DIR")
    init.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME_OR_IP",
        help="a name or address the engine will use to reach the plugin (repeatable)",
    )
    init.add_argument("--days", type=int, default=825, help="validity of the certificates (825)")
    init.add_argument("--force", action="store_true", help="replace an existing PKI in DIR")
    init.set_defaults(func=_init)

    spec = sub.add_parser(
        "spec",
        help="print the engine's NAME.json spec for a plugin served over TLS",
        description=(
            "Print the JSON spec file an engine needs to reach a plugin over https with mutual "
            "TLS. Save it as /etc/docker/plugins/NAME.json on the engine's host, with the CA "
            "and client certificate and key copied to the paths it names (--cert-dir)."
        ),
    )
    spec.add_argument("--name", default="dockvol", help="the plugin (volume driver) name")
    spec.add_argument(
        "--addr", required=True, metavar="HOST:PORT", help="where the engine reaches the plugin"
    )
    spec.add_argument("--tls", type=Path, metavar="DIR", help="the directory made by 'tls init'")
    spec.add_argument(
        "--cert-dir",
        type=Path,
        metavar="DIR",
        help="where ca.pem, client.pem and client-key.pem are on the engine's host "
        "(default: the --tls directory)",
    )
    spec.add_argument("--ca", type=Path, help="the CA file on the engine's host")
    spec.add_argument("--cert", type=Path, help="the client certificate on the engine's host")
    spec.add_argument("--key", type=Path, help="the client key on the engine's host")
    spec.set_defaults(func=_spec)


def _init(args: argparse.Namespace) -> int:
    from dockvol._transport import tls

    try:
        paths = tls.init_pki(args.dir, args.host, days=args.days, force=args.force)
    except tls.TLSError as exc:
        print(f"dockvol tls init: {exc}", file=sys.stderr)
        return 1
    hosts = ", ".join(args.host) if args.host else ", ".join(tls.default_hosts())
    print(f"Created a PKI in {args.dir} (server certificate for: {hosts}):")
    for name in tls.ALL_FILES:
        print(f"  {paths[name]}")
    print(f"Serve with: dockvol serve --tcp HOST:PORT --tls {args.dir}")
    print("Keep ca-key.pem offline if you can: whoever holds it can mint client certificates.")
    return 0


def _spec(args: argparse.Namespace) -> int:
    from dockvol._transport import tls

    try:
        tls.check_plugin_name(args.name)
        host, port = tls.parse_hostport(args.addr)
        base = args.cert_dir or args.tls
        ca = args.ca or (base / tls.CA_CERT if base else None)
        cert = args.cert or (base / tls.CLIENT_CERT if base else None)
        key = args.key or (base / tls.CLIENT_KEY if base else None)
        if ca is None or cert is None or key is None:
            raise tls.TLSError(
                "the spec needs the CA, client certificate and client key: pass --tls DIR "
                "(or --cert-dir DIR), or all of --ca, --cert, --key"
            )
        if args.tls is not None and args.cert_dir is None:
            tls.client_paths(args.tls)  # they must exist where we say they are
        client = tls.CertPaths(cert=cert, key=key, ca=ca)
        doc = tls.spec_document(args.name, tls.spec_url(host, port, True), client)
    except tls.TLSError as exc:
        print(f"dockvol tls spec: {exc}", file=sys.stderr)
        return 1
    if args.cert_dir is not None or args.tls is None:
        # Paths on another host: print them as given, not resolved here.
        doc["TLSConfig"].update(CAFile=str(ca), CertFile=str(cert), KeyFile=str(key))
    print(json.dumps(doc, indent=2))
    return 0
