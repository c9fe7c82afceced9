"""``dockvol serve``: run a volume plugin on a unix socket until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from dockvol._cli import serve_flags

LEGACY_ROOT = "/var/lib/dockvol/volumes"  # the defaults before per-name directories
LEGACY_STATE = "/var/lib/dockvol/state"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

log = logging.getLogger("dockvol")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run a volume plugin for the Docker engine",
        description="Serve a volume driver on a unix socket, as a Docker volume plugin. "
        "Every flag can also be set by an environment variable DOCKVOL_<FLAG> "
        "(e.g. DOCKVOL_ROOT, DOCKVOL_LOG_LEVEL).",
    )
    serve_flags.add_to(p)
    p.set_defaults(func=run)


def resolve_paths(args: argparse.Namespace) -> None:
    """Fill in --root and --state from --name: each plugin has its own directories.

    Installs from before per-name directories kept the plugin ``dockvol`` in
    /var/lib/dockvol/{volumes,state}: when that state exists and the new one does not, it is
    used as it is (nothing moves; the log says how to move it).
    """
    derived = args.root is None or args.state is None or (args.socket is None and not args.tcp)
    if derived and not _NAME_RE.match(args.name):
        # A managed plugin's name (me/plugin) is fine: it gives its socket and directories.
        raise Refused(
            f"--name {args.name!r} cannot name this plugin's socket and directories; use "
            "letters, digits, '.', '_' and '-' (the engine finds the plugin as "
            "/run/docker/plugins/NAME.sock), or give --socket, --root and --state"
        )
    base = Path(serve_flags.BASE_DIR) / args.name
    legacy = (
        args.name == "dockvol"
        and args.root is None
        and args.state is None
        and (Path(LEGACY_STATE) / "registry.db").exists()
        and not (base / "state").exists()
    )
    if legacy:
        args.root, args.state = Path(LEGACY_ROOT), Path(LEGACY_STATE)
        log.warning(
            "using the state of an older dockvol in %s and its volumes in %s; to move them to "
            "the per-plugin default, stop the plugin and run: mkdir -p %s && mv %s %s %s/",
            LEGACY_STATE,
            LEGACY_ROOT,
            base,
            LEGACY_ROOT,
            LEGACY_STATE,
            base,
        )
    args.root = (args.root or base / "volumes").absolute()
    args.state = (args.state or base / "state").absolute()
    if args.node is None:
        args.node = os.uname().nodename


def load_driver(spec: str) -> type[Any]:
    """``local`` -> dockvol.drivers.local.DRIVER; ``pkg.mod:Class`` -> that class.

    Modules are found in the current directory first, as ``python -m`` would.
    """
    from dockvol import Driver

    if ":" in spec:
        module_name, _, attr = spec.partition(":")
    elif spec.isidentifier():
        module_name, attr = f"dockvol.drivers.{spec}", "DRIVER"
    else:
        module_name, attr = "", ""
    if not module_name or not attr:
        raise Refused(
            f"--driver {spec!r} is not a driver: use local, block, shared, or module:Class "
            "for your own (a module in the current directory or on PYTHONPATH)"
        )
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if ":" not in spec and exc.name == module_name:
            raise Refused(
                f"unknown driver {spec!r}: use local, block, shared, or module:Class"
            ) from None
        raise Refused(
            f"cannot load driver {spec!r}: importing module {module_name!r} failed: {exc} "
            f"(looked in {cwd} and on the Python path; is the file {module_name.replace('.', '/')}"
            ".py there?)"
        ) from None
    except Exception as exc:  # the module itself failed: say where
        log.debug("importing %s failed", module_name, exc_info=True)
        raise Refused(
            f"cannot load driver {spec!r}: module {module_name!r} ({getattr(exc, 'filename', '') or cwd}) "
            f"raised {type(exc).__name__}: {exc}"
        ) from None
    cls = getattr(module, attr, None)
    if cls is None:
        found = sorted(
            n
            for n, v in vars(module).items()
            if isinstance(v, type) and issubclass(v, Driver) and v is not Driver
        )
        raise Refused(
            f"cannot load driver {spec!r}: module {module_name!r} has no {attr!r}"
            + (f"; its drivers: {', '.join(found)}" if found else "")
        )
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise Refused(f"cannot load driver {spec!r}: {attr} is not a dockvol.Driver subclass")
    return cls


def driver_identity(cls: type[Any]) -> dict[str, str]:
    """What the registry records about its owner: the driver class and its option names."""
    return {
        "driver": f"{cls.__module__}:{cls.__qualname__}",
        "options": ",".join(sorted(cls.options)),
    }


def check_owner(registry: Any, cls: type[Any], state: Path) -> None:
    """Refuse a state that belongs to another driver, before anything is touched."""
    mine = driver_identity(cls)
    theirs = dict(registry.owner())
    if not theirs:
        return
    if theirs.get("driver") != mine["driver"]:
        raise Refused(
            f"the state in {state} belongs to driver {theirs.get('driver')!r}, not "
            f"{mine['driver']!r}: start that driver on it, or give this one its own --name "
            "(or --state and --root)"
        )
    if theirs.get("options") != mine["options"]:
        log.warning(
            "driver %s now takes options %s (its volumes were made with %s)",
            mine["driver"],
            mine["options"] or "none",
            theirs.get("options") or "none",
        )


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
    except Refused as exc:
        log.error("%s", exc)
        print(f"dockvol serve: {exc}", file=sys.stderr)
        return 1


class Refused(Exception):
    """serve cannot start: the message says why and what to do (printed without a traceback)."""


def _serve(args: argparse.Namespace) -> int:
    from dockvol._registry.sqlite import SchemaTooNew
    from dockvol._registry.statelock import StateLock, StateLocked
    from dockvol._sdk.context import HostContext
    from dockvol._sdk.errors import DriverError
    from dockvol._sdk.secrets import SecretStore
    from dockvol._service.service import VolumeService
    from dockvol._transport import server, systemd, unix
    from dockvol._wire.app import PluginApp

    os.umask(0o077)  # state and logs we create are ours alone; volume modes are set explicitly
    _limit_malloc_arenas()
    resolve_paths(args)
    tcp_plan = _plan_tcp(args)
    default_sock = f"/run/{'dockvol' if tcp_plan else 'docker/plugins'}/{args.name}.sock"
    sock_path: Path = args.socket or Path(default_sock)
    driver_cls = load_driver(args.driver)
    # Before anything else touches the state or a volume: one process per state directory.
    lock = StateLock(args.state)
    try:
        lock.acquire()
    except (StateLocked, OSError) as exc:
        raise Refused(str(exc)) from None
    try:
        registry = open_registry(args, driver_cls)
    except (OSError, SchemaTooNew, DriverError) as exc:
        raise Refused(f"cannot start: {exc}") from None
    check_owner(registry, driver_cls, args.state)
    shared = bool(registry.shared)
    context = HostContext(
        plugin=args.name,
        node=args.node,
        # A root shared by several hosts: per-host files (mounts) go to this node's state.
        local_dir=args.state,
        shared_root=shared,
        cluster=registry if shared else None,
    )
    driver = driver_cls(args.root, context)
    try:
        driver.setup()
    except (OSError, DriverError) as exc:
        registry.close()
        raise Refused(f"cannot start: {exc}") from None
    registry.set_owner(driver_identity(driver_cls))
    service = VolumeService(driver, registry, secrets=SecretStore(args.secrets_dir))
    if shared:  # self-fencing: the cluster registry fences what it can no longer prove it holds
        registry.on_hold_lost = service.fence
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
        raise Refused(str(exc)) from None
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
        raise Refused(str(exc)) from None
    finally:
        systemd.notify("STOPPING=1")
        if inherited is None:
            unix.remove_socket(sock_path, sock)
        sock.close()
        service.close()
        lock.release()
        log.info("stopped; socket %s removed", sock_path)
    return 0


def _plan_tcp(args: argparse.Namespace) -> Any:
    """Check --tcp/--tls* before anything is bound: a refused setup changes nothing."""
    if not args.tcp:
        if args.tls or args.tls_cert or args.tls_key or args.tls_ca:
            raise Refused("--tls/--tls-cert/--tls-key/--tls-ca need --tcp HOST:PORT")
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
        raise Refused(str(exc)) from None


def _side_servers(args: argparse.Namespace, app: Any, service: Any, tcp_plan: Any) -> list[Any]:
    """Listeners beside the unix socket: TCP (+ spec file) and metrics, as async contexts."""
    out: list[Any] = []
    if tcp_plan is not None:
        from dockvol._transport.tcp import serve_tcp

        out.append(serve_tcp(tcp_plan, app, name=args.name, spec_dir=args.spec_dir))
    if args.csi_endpoint or os.environ.get("CSI_ENDPOINT"):
        from dockvol._csi.server import serve_csi  # a bad endpoint is an OSError at start

        out.append(serve_csi(service, args.csi_endpoint, node_id=args.node or "", name=args.name))
    if args.docker_host:
        from dockvol._engine.heal import healing

        out.append(healing(service, args.docker_host, every=args.heal_every))
        service.healing = True
    if not args.metrics:
        return out  # no listener, no per-request counting
    from dockvol import __version__
    from dockvol._transport.metrics import Metrics, serve_metrics

    metrics = Metrics(driver=args.driver, version=__version__)
    app.observers.append(lambda ep, _n, _i, secs, outcome, _e: metrics.observe(ep, outcome, secs))
    service.on_driver_error = metrics.driver_error
    metrics.gauge("volumes", "Volumes known to this plugin.", lambda: len(service.list_volumes()))
    metrics.gauge(
        "active_mounts",
        "Mount IDs currently holding a volume.",
        lambda: service.summary()["active_mounts"],
    )
    metrics.gauge("ready", "1 once reconciled and serving.", lambda: service.health.ready)
    metrics.gauge(
        "fenced_volumes",
        "Volumes fenced on this host (their containers need a restart).",
        lambda: len(service.summary()["fenced"]),
    )
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
