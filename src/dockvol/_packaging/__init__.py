"""Managed-plugin packaging: config.json from a driver's needs, rootfs from a Dockerfile."""

from .config import PROPAGATED_MOUNT, SOCKET_NAME, STATE_DIR, plugin_config

__all__ = ["PROPAGATED_MOUNT", "SOCKET_NAME", "STATE_DIR", "plugin_config"]
