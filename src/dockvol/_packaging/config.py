"""config.json of a managed (v2) plugin, derived from what the driver really needs.

Layout inside the plugin (PROTOCOL.md §5):
- ``/var/lib/dockvol/volumes``: the propagated mount and the driver's root. Every Mountpoint the
  plugin returns is under it, so the engine can map it to the host; it lives outside the rootfs
  and survives ``docker plugin upgrade``.
- ``/var/lib/dockvol/state``: the registry, bound from a host directory (the settable ``state``
  mount) so volume records and mount records survive upgrade and reinstall.
- ``/run/docker/plugins/dockvol.sock``: the socket the engine dials.
"""

from __future__ import annotations

import re
from typing import Any

from dockvol._sdk.driver import Driver

SOCKET_NAME = "dockvol.sock"
PROPAGATED_MOUNT = "/var/lib/dockvol/volumes"
STATE_DIR = "/var/lib/dockvol/state"
STATE_SOURCE_BASE = "/var/lib/dockvol/plugins"
DOCUMENTATION = "https://github.com/dockvol/dockvol/blob/main/docs/packaging.md"
ENTRYPOINT = ["python3", "-m", "dockvol", "serve"]


def default_state_source(name: str) -> str:
    """Host directory for a plugin's state: one per repository name (the tag is ignored so that
    an upgrade to a new tag finds the same state)."""
    repo = name.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", repo).strip("-.") or "plugin"
    return f"{STATE_SOURCE_BASE}/{safe}"


def _env(name: str, value: str, description: str) -> dict[str, Any]:
    return {"name": name, "description": description, "value": value, "settable": ["value"]}


def _plugin_name(name: str) -> str:
    """``registry:5000/me/plug:1.0`` -> ``me/plug`` (what users type, without registry and tag)."""
    last = name.rsplit("/", 1)
    last[-1] = last[-1].split(":", 1)[0].split("@", 1)[0]
    path = "/".join(last)
    first, _, rest = path.partition("/")
    return rest if rest and ("." in first or ":" in first or first == "localhost") else path


def plugin_config(
    name: str,
    driver_name: str,
    driver_cls: type[Driver],
    *,
    state_source: str,
    log_level: str = "info",
    log_format: str = "text",
) -> dict[str, Any]:
    """The ``config.json`` for a plugin serving ``driver_name`` (a module of dockvol.drivers)."""
    # Every flag of dockvol serve, settable with docker plugin set while disabled. Empty means
    # serve's own default.
    env = [
        _env(
            "DOCKVOL_DRIVER",
            driver_name,
            "driver module (dockvol.drivers.<name>); a driver "
            "that mounts filesystems needs a plugin built for it",
        ),
        _env("DOCKVOL_NAME", _plugin_name(name), "driver name shown in logs"),
        _env(
            "DOCKVOL_ROOT",
            PROPAGATED_MOUNT,
            f"where volumes live; must stay under {PROPAGATED_MOUNT}",
        ),
        _env("DOCKVOL_STATE", STATE_DIR, "registry directory (the 'state' mount)"),
        _env(
            "DOCKVOL_SOCKET",
            f"/run/docker/plugins/{SOCKET_NAME}",
            "socket the engine dials; do not change",
        ),
        _env("DOCKVOL_SOCKET_GROUP", "root", "group owning the socket"),
        _env("DOCKVOL_SECRETS_DIR", "", "directory of secret files for -o KEY=secret:NAME"),
        _env("DOCKVOL_REGISTRY", "sqlite:", "sqlite: (in the state directory) or etcd://HOST:PORT"),
        _env("DOCKVOL_NODE", "", "this host's name in a cluster registry"),
        _env("DOCKVOL_LEASE_TTL", "", "seconds before a dead node's volumes are released"),
        _env("DOCKVOL_LOG_LEVEL", log_level, "debug, info, warning or error"),
        _env("DOCKVOL_LOG_FORMAT", log_format, "text or json"),
    ]
    mounts: list[dict[str, Any]] = [
        {
            "name": "state",
            "description": "host directory holding the plugin's registry (volumes, options, "
            "mount records); keep it to keep volumes across reinstalls",
            "source": state_source,
            "destination": STATE_DIR,
            "type": "bind",
            "options": ["rbind", "rw"],
            "settable": ["source"],
        }
    ]
    linux: dict[str, Any] = {"capabilities": [], "allowAllDevices": False, "devices": None}
    if driver_cls.needs_mount_privileges:
        # Mounting filesystems needs CAP_SYS_ADMIN; loop devices appear in /dev on demand,
        # so the host's /dev is bound whole and every device is allowed.
        linux = {"capabilities": ["CAP_SYS_ADMIN"], "allowAllDevices": True, "devices": None}
        mounts.append(
            {
                "name": "dev",
                "description": "host devices (loop and block devices)",
                "source": "/dev",
                "destination": "/dev",
                "type": "bind",
                "options": ["rbind"],
            }
        )
    doc = (driver_cls.__doc__ or "").strip().splitlines()
    summary = doc[0].rstrip(".") if doc else f"{driver_name} driver"
    return {
        "description": f"dockvol volume plugin: {summary}",
        "documentation": DOCUMENTATION,
        "entrypoint": ENTRYPOINT,
        "workdir": "/",
        "interface": {"types": ["docker.volumedriver/1.0"], "socket": SOCKET_NAME},
        # The drivers shipped here need no network; the plugin gets its own empty namespace.
        "network": {"type": "none"},
        "propagatedMount": PROPAGATED_MOUNT,
        "mounts": mounts,
        "env": env,
        "args": {
            "name": "args",
            "description": "extra arguments to dockvol serve",
            "value": [],
            "settable": ["value"],
        },
        "linux": linux,
        "ipchost": False,
        "pidhost": False,
    }
