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
    # Empty counts as unset: a managed plugin declares every variable, some with no value.
    return os.environ.get("DOCKVOL_" + flag.upper().replace("-", "_")) or default


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
    # TCP + mutual TLS and metrics (docs/security.md).
    a(
        "--tcp",
        default=env_default("tcp"),
        metavar="HOST:PORT",
        help="also serve the engine over TCP (needs --tls, or --allow-plaintext-tcp on loopback); "
        "the unix socket then defaults to /run/dockvol/NAME.sock, out of the engine's sight",
    )
    a("--tls", type=Path, default=env_default("tls"), metavar="DIR",
      help="certificates made by 'dockvol tls init DIR' (mutual TLS)")  # fmt: skip
    a("--tls-cert", type=Path, default=env_default("tls_cert"), help="own server certificate")
    a("--tls-key", type=Path, default=env_default("tls_key"), help="own server key (0600)")
    a("--tls-ca", type=Path, default=env_default("tls_ca"), help="CA that signs client certs")
    a(
        "--spec-dir",
        type=Path,
        default=Path(env_default("spec_dir", "/etc/docker/plugins")),
        help="where to write NAME.json for the engine with --tcp (default: /etc/docker/plugins)",
    )
    a(
        "--allow-plaintext-tcp",
        action="store_true",
        default=env_default("allow_plaintext_tcp", "") in ("1", "true", "yes"),
        help="allow --tcp without TLS; only accepted for a loopback address",
    )
    a(
        "--metrics",
        default=env_default("metrics"),
        metavar="[HOST:]PORT",
        help="serve Prometheus /metrics and /health there (off by default; host: 127.0.0.1)",
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


def open_registry(args: argparse.Namespace, driver_cls: type[Any]) -> Any:
    url: str = args.registry
    if url in ("sqlite:", "sqlite", ""):
        from dockvol._registry.sqlite import SqliteRegistry

        return SqliteRegistry(args.state)
    if url.startswith(("etcd://", "etcds://")):
        from dockvol._cluster.registry import open_registry as open_etcd

        # The driver's default access mode; a driver that declares none and whose volumes are
        # not shared storage (scope local, e.g. block) gets single-node: one node at a time.
        access = driver_cls.options.get("access")
        default = (
            access.default
            if access is not None
            else ("multi" if driver_cls.scope == "global" else "single-node")
        )
        return open_etcd(
            url, args.node, args.state, args.lease_ttl, default_access=default, plugin=args.name
        )
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
    from dockvol._sdk.errors import DriverError
    from dockvol._sdk.secrets import SecretStore
    from dockvol._service.service import VolumeService
    from dockvol._transport import server, systemd, unix
    from dockvol._wire.app import PluginApp

    os.umask(0o077)  # state and logs we create are ours alone; volume modes are set explicitly
    _limit_malloc_arenas()
    tcp_plan = _plan_tcp(args)
    default_sock = f"/run/{'dockvol' if tcp_plan else 'docker/plugins'}/{args.name}.sock"
    sock_path: Path = args.socket or Path(default_sock)
    driver_cls = load_driver(args.driver)
    driver = driver_cls(args.root.absolute())
    if args.registry.startswith(("etcd://", "etcds://")):
        # --root is shared by every node: a driver that keeps per-host paths (mounts) under it
        # moves them to this node's own --state.
        node_local = getattr(driver, "node_local", None)
        if callable(node_local):
            node_local(args.state.absolute())
    try:
        driver.setup()
        registry = open_registry(args, driver_cls)
        if getattr(registry, "shared", False) and hasattr(driver, "cluster_hold"):
            # A driver that re-attaches at start (block) must hold single-node volumes first.
            driver.cluster_hold = registry.acquire
    except (OSError, SchemaTooNew, DriverError) as exc:
        raise _Refused(f"cannot start: {exc}") from None
    service = VolumeService(driver, registry, secrets=SecretStore(args.secrets_dir))
    service.reconcile()
    app = PluginApp(service)
    # Serve writes its own request lines (fast); the stdlib observer is for embedded apps.
    from dockvol._cli.access_log import AccessLog

    app.observers = [AccessLog(args.log_format)] if args.log_level in ("debug", "info") else []
    group = args.socket_group if args.socket_group is not None else unix.default_group()
    try:
        # Socket activation (dockvol.socket): systemd owns the socket file and its permissions.
        inherited = systemd.inherited_socket()
        sock = inherited or unix.bind_unix(sock_path, group)
    except (unix.SocketError, RuntimeError) as exc:
        service.close()
        raise _Refused(str(exc)) from None
    srv = server.make_server(app)
    beside = _side_servers(args, app, service, tcp_plan)
    log.info(
        "serving driver %s (%s) as %r on %s; volumes in %s, state in %s",
        args.driver,
        driver_cls.__name__,
        args.name,
        sock_path,
        args.root,
        args.state,
    )

    def ready() -> None:
        log.info("listening %.2f s after process start", systemd.seconds_since_start())
        systemd.notify("READY=1")

    try:
        server.run(srv, [sock], on_ready=ready, beside=beside)
    except OSError as exc:  # a side listener could not start (address in use...)
        raise _Refused(str(exc)) from None
    finally:
        systemd.notify("STOPPING=1")
        if inherited is None:
            unix.remove_socket(sock_path, sock)
        sock.close()
        service.close()
        log.info("stopped; socket %s removed", sock_path)
    return 0


def _plan_tcp(args: argparse.Namespace) -> Any:
    """Check --tcp/--tls* before anything is bound: a refused setup changes nothing."""
    if not args.tcp:
        if args.tls or args.tls_cert or args.tls_key or args.tls_ca:
            raise _Refused("--tls/--tls-cert/--tls-key/--tls-ca need --tcp HOST:PORT")
        return None
    from dockvol._transport import tls

    try:
        return tls.plan_tcp(
            args.tcp,
            tls_dir=args.tls,
            cert=args.tls_cert,
            key=args.tls_key,
            ca=args.tls_ca,
            allow_plaintext=args.allow_plaintext_tcp,
        )
    except tls.TLSError as exc:
        raise _Refused(str(exc)) from None


def _side_servers(args: argparse.Namespace, app: Any, service: Any, tcp_plan: Any) -> list[Any]:
    """Listeners beside the unix socket: TCP (+ spec file) and metrics, as async contexts."""
    out: list[Any] = []
    if tcp_plan is not None:
        from dockvol._transport.tcp import serve_tcp

        out.append(serve_tcp(tcp_plan, app, name=args.name, spec_dir=args.spec_dir))
    if not args.metrics:
        return out  # no listener, no per-request counting
    from dockvol import __version__
    from dockvol._transport.metrics import Metrics, serve_metrics

    metrics = Metrics(driver=args.driver, version=__version__)
    app.observers.append(lambda ep, _n, _i, secs, outcome, _e: metrics.observe(ep, outcome, secs))
    service.on_driver_error = metrics.driver_error
    metrics.gauge("volumes", "Volumes known to this plugin.", lambda: len(service.list()))
    metrics.gauge(
        "active_mounts",
        "Mount IDs currently holding a volume.",
        lambda: service.summary()["active_mounts"],
    )
    metrics.gauge("ready", "1 once reconciled and serving.", lambda: service.health.ready)
    out.append(serve_metrics(args.metrics, metrics, service.health.as_dict))
    return out


def _limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas at two (as MALLOC_ARENA_MAX=2 would).

    Each worker thread that allocates gets an arena of its own that keeps what it freed: with a
    busy pool that was ~6 MB of RSS for nothing, in threads that mostly wait on syscalls.
    """
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(-8, 2)  # -8: M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune
