"""config.json of a managed (v2) plugin, derived from what the driver really needs.

Layout inside the plugin (docs/packaging.md):
- ``/var/lib/dockvol``: the propagated mount. It lives outside the rootfs, in the engine's
  directory for this plugin, so it survives disable/enable, engine restarts and
  ``docker plugin upgrade``; ``docker plugin rm`` deletes it.
- ``/var/lib/dockvol/volumes``: the driver's root. Every Mountpoint the plugin returns is under
  it, hence strictly under the propagated mount, which is how the engine maps it to the host.
- ``/var/lib/dockvol/state``: the registry (volumes, options, mount records), next to the data
  it describes, so both always have the same lifetime.
- ``/run/docker/plugins/dockvol.sock``: the socket the engine dials.

Why the state is not a settable bind mount from the host: the engine (20.10, and moby since)
starts a plugin with the *config's* mount sources, and ``docker plugin upgrade`` replaces the
config, so a source set with ``docker plugin set`` silently reverts to the new build's default
on upgrade, and the plugin would come back with an empty registry (the engine then forgets
every volume). A bind source must also exist before enable, which breaks ``docker plugin
install`` on a fresh host. Settings in ``env`` do survive upgrades: DOCKVOL_STATE may point
anywhere the plugin can reach.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from dockvol._sdk.driver import Driver

SOCKET_NAME = "dockvol.sock"
PROPAGATED_MOUNT = "/var/lib/dockvol"
ROOT_DIR = f"{PROPAGATED_MOUNT}/volumes"
STATE_DIR = f"{PROPAGATED_MOUNT}/state"
DOCUMENTATION = "https://github.com/dockvol/dockvol/blob/main/docs/packaging.md"
ENTRYPOINT = ["python3", "-m", "dockvol", "serve"]


def _env(name: str, value: str, description: str) -> dict[str, Any]:
    return {"name": name, "description": description, "value": value, "settable": ["value"]}


def serve_env_vars() -> list[tuple[str, str]]:
    """(DOCKVOL_<FLAG>, first line of its help) for every flag of ``dockvol serve``."""
    from dockvol._cli.serve_flags import SERVE_FLAGS

    out = []
    for flag in SERVE_FLAGS:
        short = flag.help.split(" (")[0].split("; ")[0]
        if short.startswith("default"):
            short = ""
        out.append((flag.env, f"--{flag.name} {short}".strip()))
    return out


def _plugin_name(name: str) -> str:
    """``registry:5000/me/plug:1.0`` -> ``me/plug`` (what users type, without registry and tag)."""
    last = name.rsplit("/", 1)
    last[-1] = last[-1].split(":", 1)[0].split("@", 1)[0]
    path = "/".join(last)
    first, _, rest = path.partition("/")
    return rest if rest and ("." in first or ":" in first or first == "localhost") else path


def _summary(doc: str | None) -> str:
    """A docstring's summary for one line of ``docker plugin ls``: its first paragraph, wrapped
    lines joined, without reST's double backquotes or a final full stop; "" without one."""
    first = re.split(r"\n\s*\n", (doc or "").strip(), maxsplit=1)[0]
    return " ".join(first.split()).replace("``", "").rstrip(".")


def _description(driver_name: str, driver_cls: type[Driver], custom: bool) -> str:
    """What ``docker plugin ls`` and ``inspect`` show: the driver class's own docstring (a class
    does not inherit one), else for a driver of the author's own its module's docstring, else
    which driver the plugin serves."""
    text = _summary(driver_cls.__doc__)
    if not text and custom:
        text = _summary(getattr(sys.modules.get(driver_cls.__module__), "__doc__", None))
    if text:
        return f"dockvol volume plugin: {text}"
    if custom:  # "TmpfsDriver driver" would say little; the module:Class names the code
        return f"dockvol volume plugin (driver {driver_name})"  # csi.py's replace keeps working
    return f"dockvol volume plugin: {driver_name} driver"


def plugin_config(
    name: str,
    driver_name: str,
    driver_cls: type[Driver],
    *,
    log_level: str = "info",
    log_format: str = "text",
    csi: bool = False,
) -> dict[str, Any]:
    """The ``config.json`` for a plugin serving ``driver_name`` (a module of dockvol.drivers, or
    ``module:Class`` shipped in custom.DRIVERS_DIR); with ``csi``, a CSI plugin for Swarm
    cluster volumes (see csi.py)."""
    from .custom import DRIVERS_DIR, is_custom

    # Every flag of dockvol serve, settable with docker plugin set while disabled; an empty
    # value means serve's own default. Values set by users survive docker plugin upgrade.
    values = {
        "DOCKVOL_DRIVER": driver_name,
        "DOCKVOL_NAME": _plugin_name(name),
        "DOCKVOL_ROOT": ROOT_DIR,
        "DOCKVOL_STATE": STATE_DIR,
        "DOCKVOL_SOCKET": f"/run/docker/plugins/{SOCKET_NAME}",
        "DOCKVOL_SOCKET_GROUP": "root",
        "DOCKVOL_LOG_LEVEL": log_level,
        "DOCKVOL_LOG_FORMAT": log_format,
    }
    notes = {
        "DOCKVOL_DRIVER": "; a driver that mounts filesystems needs a plugin built for it",
        "DOCKVOL_ROOT": f"; must stay under {PROPAGATED_MOUNT}/",
        "DOCKVOL_SOCKET": "; do not change: the engine dials this one",
    }
    env = [
        _env(var, values.get(var, ""), help_text + notes.get(var, ""))
        for var, help_text in serve_env_vars()
    ]
    mounts: list[dict[str, Any]] = []
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
    config = {
        "description": _description(driver_name, driver_cls, is_custom(driver_name)),
        "documentation": DOCUMENTATION,
        "entrypoint": ENTRYPOINT,
        # A driver of the author's own is found in the working directory, as serve finds it.
        "workdir": DRIVERS_DIR if is_custom(driver_name) else "/",
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
    if csi:
        from .csi import apply_csi

        apply_csi(config, driver_cls)
    return config
