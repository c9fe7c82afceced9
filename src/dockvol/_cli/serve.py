"""``dockvol serve``: run a volume plugin on a unix socket until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_NAME = "dockvol"
DEFAULT_ROOT = "/var/lib/dockvol/volumes"
DEFAULT_STATE = "/var/lib/dockvol/state"
LOG_LEVELS = ("debug", "info", "warning", "error")

log = logging.getLogger("dockvol")


def env_default(flag: str, default: Any = None) -> Any:
    """Every flag can also come from DOCKVOL_<FLAG> (``docker plugin set`` sets env vars)."""
    return os.environ.get("DOCKVOL_" + flag.upper().replace("-", "_"), default)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run a volume plugin for the Docker engine",
        description="Serve a volume driver on a unix socket, as a Docker volume plugin. "
        "Every flag can also be set by an environment variable DOCKVOL_<FLAG> "
        "(e.g. DOCKVOL_ROOT, DOCKVOL_LOG_LEVEL).",
    )
    a = p.add_argument
    a(
        "--driver",
        default=env_default("driver", "local"),
        help="driver: local, block, shared, or module:Class for your own (default: local)",
    )
    a(
        "--name",
        default=env_default("name", DEFAULT_NAME),
        help="plugin name the engine knows it by: docker volume create -d NAME (default: dockvol)",
    )
    a(
        "--socket",
        type=Path,
        default=env_default("socket"),
        help="unix socket path (default: /run/docker/plugins/NAME.sock)",
    )
    a(
        "--root",
        type=Path,
        default=Path(env_default("root", DEFAULT_ROOT)),
        help=f"where volumes live (default: {DEFAULT_ROOT})",
    )
    a(
        "--state",
        type=Path,
        default=Path(env_default("state", DEFAULT_STATE)),
        help=f"where the registry lives (default: {DEFAULT_STATE})",
    )
    a(
        "--socket-group",
        default=env_default("socket_group"),
        help="group owning the socket (mode 0660; default: docker if it exists, else root)",
    )
    a(
        "--secrets-dir",
        type=Path,
        default=env_default("secrets_dir"),
        help="directory of secret files for options given as secret:NAME",
    )
    a(
        "--registry",
        default=env_default("registry", "sqlite:"),
        help="where volume records live: sqlite: (in --state, the default) or etcd://HOST:PORT[,...]",
    )
    a(
        "--node",
        default=env_default("node", os.uname().nodename),
        help="this host's name in a cluster registry (default: the hostname)",
    )
    a(
        "--lease-ttl",
        type=float,
        default=float(env_default("lease_ttl", "15")),
        help="seconds before a dead node's single-node volumes are released (cluster registry)",
    )
    a(
        "--log-level",
        choices=LOG_LEVELS,
        default=env_default("log_level", "info").lower(),
        help="default: info (one line per request)",
    )
    a("--log-format", choices=("text", "json"), default=env_default("log_format", "text"))
    p.set_defaults(func=run)


def load_driver(spec: str) -> type[Any]:
    """``local`` -> dockvol.drivers.local.DRIVER; ``pkg.mod:Class`` -> that class."""
    from dockvol import Driver

    if ":" in spec:
        module_name, _, attr = spec.partition(":")
    else:
        module_name, attr = f"dockvol.drivers.{spec}", "DRIVER"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if (exc.name and module_name.startswith(exc.name)) or exc.name == module_name:
            raise SystemExit(
                f"dockvol serve: unknown driver {spec!r}: use local, block, shared, or module:Class"
            ) from None
        raise
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise SystemExit(f"dockvol serve: {spec!r} is not a dockvol.Driver subclass")
    return cls


def open_registry(args: argparse.Namespace) -> Any:
    url: str = args.registry
    if url in ("sqlite:", "sqlite", ""):
        from dockvol._registry.sqlite import SqliteRegistry

        return SqliteRegistry(args.state)
    if url.startswith("etcd://"):
        from dockvol._registry.etcd import open_registry as open_etcd

        return open_etcd(url, args.node, args.state, args.lease_ttl)
    raise SystemExit(f"dockvol serve: unknown --registry {url!r}: use sqlite: or etcd://HOST:PORT")


def run(args: argparse.Namespace) -> int:
    from dockvol._cli import logs

    logs.setup(args.log_level, args.log_format)
    try:
        return _serve(args)
    except SystemExit:
        raise
    except _Refused as exc:
        log.error("%s", exc)
        print(f"dockvol serve: {exc}", file=sys.stderr)
        return 1


class _Refused(Exception):
    pass


def _serve(args: argparse.Namespace) -> int:
    from dockvol._registry.sqlite import SchemaTooNew
    from dockvol._sdk.secrets import SecretStore
    from dockvol._service.service import VolumeService
    from dockvol._transport import server, unix
    from dockvol._wire.app import PluginApp

    os.umask(0o077)  # state and logs we create are ours alone; volume modes are set explicitly
    sock_path: Path = args.socket or Path(f"/run/docker/plugins/{args.name}.sock")
    driver_cls = load_driver(args.driver)
    driver = driver_cls(args.root.absolute())
    try:
        driver.setup()
        registry = open_registry(args)
    except (OSError, SchemaTooNew) as exc:
        raise _Refused(f"cannot start: {exc}") from None
    service = VolumeService(driver, registry, secrets=SecretStore(args.secrets_dir))
    service.reconcile()
    app = PluginApp(service)
    group = args.socket_group if args.socket_group is not None else unix.default_group()
    try:
        sock = unix.bind_unix(sock_path, group)
    except unix.SocketError as exc:
        service.close()
        raise _Refused(str(exc)) from None
    srv = server.make_server(app)
    log.info(
        "serving driver %s (%s) as %r on %s; volumes in %s, state in %s",
        args.driver,
        driver_cls.__name__,
        args.name,
        sock_path,
        args.root,
        args.state,
    )
    try:
        server.run(srv, [sock])
    finally:
        unix.remove_socket(sock_path, sock)
        sock.close()
        service.close()
        log.info("stopped; socket %s removed", sock_path)
    return 0
