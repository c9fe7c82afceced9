"""What a CSI managed plugin (``dockvol plugin build --csi``) changes in config.json.

Swarm's cluster volumes (engine 23 and later) dial plugins that declare
``docker.csicontroller/1.0`` and ``docker.csinode/1.0`` on the socket named in the config, and
publish every volume under ``/data/published`` inside the plugin (its propagated mount: the
engine finds the published paths on the host there). Staging and publishing are bind mounts:
the plugin needs CAP_SYS_ADMIN whatever its driver. Volumes and state live under the
propagated mount too (``/data/published/.dockvol``), so they survive ``docker plugin upgrade``. The Docker socket is moved out of the
engine's way (a plugin has one socket; this one speaks CSI).

For the ``shared`` driver, the directory every node mounts is a bind mount named ``shared``,
set per node before enable: ``docker plugin set NAME shared.source=/mnt/shared``.
"""

from __future__ import annotations

from typing import Any

from dockvol._sdk.driver import Driver

CSI_SOCKET = "csi.sock"
CSI_TYPES = ["docker.csicontroller/1.0", "docker.csinode/1.0"]
PUBLISHED = "/data/published"
#: The volumes and the registry, under the propagated mount: it lives outside the rootfs, so
#: they survive ``docker plugin upgrade`` (which replaces the rootfs) with the plugin itself.
#: Swarm publishes at PUBLISHED/<volume id>; no volume may be called this (CreateVolume refuses).
KEPT = f"{PUBLISHED}/.dockvol"
#: Inside the plugin: where the ``shared`` bind mount appears, and the shared driver's root.
SHARED_DIR = "/shared"
SHARED_DEFAULT_SOURCE = "/mnt/shared"


def apply_csi(config: dict[str, Any], driver_cls: type[Driver]) -> dict[str, Any]:
    """Turn a Docker volume plugin's config into a CSI plugin's (in place; returned)."""
    config["description"] = config["description"].replace(
        "dockvol volume plugin", "dockvol CSI plugin", 1
    )
    config["interface"] = {"types": list(CSI_TYPES), "socket": CSI_SOCKET}
    config["propagatedMount"] = PUBLISHED
    linux = config["linux"]
    if "CAP_SYS_ADMIN" not in linux["capabilities"]:
        linux["capabilities"] = [*linux["capabilities"], "CAP_SYS_ADMIN"]
    values = {
        "DOCKVOL_ROOT": f"{KEPT}/volumes",
        "DOCKVOL_STATE": f"{KEPT}/state",
        "CSI_ENDPOINT": f"unix:///run/docker/plugins/{CSI_SOCKET}",
        # Out of the engine's sight: it dials only the interface socket.
        "DOCKVOL_SOCKET": "/run/dockvol/dockvol.sock",
    }
    env = config["env"]
    for entry in env:
        if entry["name"] in values:
            entry["value"] = values.pop(entry["name"])
        if entry["name"] == "DOCKVOL_SOCKET":
            entry["description"] = "--socket the Docker volume API socket (unused by Swarm)"
        if entry["name"] == "DOCKVOL_ROOT":
            entry["description"] = f"--root where volumes live; keep it under {PUBLISHED}/"
        if entry["name"] == "DOCKVOL_STATE":
            entry["description"] = f"--state the registry; keep it under {PUBLISHED}/"
    env.append(
        {
            "name": "CSI_ENDPOINT",
            "description": "where CSI is served; do not change: the engine dials this one",
            "value": values.pop("CSI_ENDPOINT"),
            "settable": ["value"],
        }
    )
    if driver_cls.sharing == "multi-node":
        config["mounts"].append(
            {
                "name": "shared",
                "description": "the shared filesystem every node mounts (the volumes' root): "
                "docker plugin set NAME shared.source=/mnt/shared",
                "source": SHARED_DEFAULT_SOURCE,
                "destination": SHARED_DIR,
                "type": "bind",
                "options": ["rbind"],
                "settable": ["source"],
            }
        )
        for entry in env:
            if entry["name"] == "DOCKVOL_ROOT":
                entry["value"] = SHARED_DIR
    return config
