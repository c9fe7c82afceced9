"""The flags of ``dockvol serve``, in one table read by argparse, the environment and packaging.

Every flag can also be set by an environment variable ``DOCKVOL_<FLAG>``: that is how a managed
plugin is configured (``docker plugin set``), so the packaging code lists this table in the
plugin's config.json. An empty variable counts as unset (a managed plugin declares them all).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
#: Volumes and state of a plugin named NAME live under BASE/NAME (two plugins never share them).
BASE_DIR: Final = "/var/lib/dockvol"


@dataclass(frozen=True, slots=True)
class Flag:
    name: str  # without the leading --
    help: str
    #: The default as text, as the environment would give it; None: unset (or derived later).
    default: str | None = None
    convert: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    switch: bool = False  # --flag without a value

    @property
    def env(self) -> str:
        return "DOCKVOL_" + self.name.upper().replace("-", "_")

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    def value(self) -> Any:
        """The default, from ``DOCKVOL_<FLAG>`` if set, else from the table."""
        raw = os.environ.get(self.env) or self.default
        if self.switch:
            return (raw or "").lower() in ("1", "true", "yes")
        if raw is None:
            return None
        return self.convert(raw.lower() if self.choices else raw)


SERVE_FLAGS: Final[tuple[Flag, ...]] = (
    Flag("driver", "driver: local, block, shared, or module:Class for your own (default: local)",
         "local"),
    Flag("name", "plugin name the engine knows it by: docker volume create -d NAME "
         "(default: dockvol)", "dockvol"),
    Flag("socket", "unix socket path (default: /run/docker/plugins/NAME.sock)", convert=Path),
    Flag("root", f"where volumes live (default: {BASE_DIR}/NAME/volumes)", convert=Path),
    Flag("state", f"where the registry lives (default: {BASE_DIR}/NAME/state)", convert=Path),
    Flag("socket-group", "group owning the socket (mode 0660; default: docker if it exists, "
         "else root)"),
    Flag("secrets-dir", "directory of secret files for options given as secret:NAME",
         convert=Path),
    Flag("tcp", "also serve the engine over TCP (needs --tls, or --allow-plaintext-tcp on "
         "loopback); the unix socket then defaults to /run/dockvol/NAME.sock, out of the "
         "engine's sight", metavar="HOST:PORT"),
    Flag("tls", "certificates made by 'dockvol tls init DIR' (mutual TLS)", convert=Path,
         metavar="DIR"),
    Flag("tls-cert", "own server certificate", convert=Path),
    Flag("tls-key", "own server key (0600)", convert=Path),
    Flag("tls-ca", "CA that signs client certs", convert=Path),
    Flag("spec-dir", "where to write NAME.json for the engine with --tcp "
         "(default: /etc/docker/plugins)", "/etc/docker/plugins", Path),
    Flag("allow-plaintext-tcp", "allow --tcp without TLS; only accepted for a loopback address",
         switch=True),
    Flag("metrics", "serve Prometheus /metrics and /health there (off by default; host: "
         "127.0.0.1)", metavar="[HOST:]PORT"),
    Flag("registry", "where volume records live: sqlite: (in --state, the default) or "
         "etcd://HOST:PORT[,...]", "sqlite:"),
    Flag("node", "this host's name in a cluster registry (default: the hostname)"),
    Flag("lease-ttl", "seconds before a dead node's single-node volumes are released (cluster "
         "registry)", "15", float),
    Flag("csi-endpoint", "also serve CSI (Identity, Controller, Node) on this unix socket: "
         "unix:///path/csi.sock or a path (default: $CSI_ENDPOINT; off when neither is set)",
         metavar="ENDPOINT"),
    Flag("docker-host", "the engine's API socket, e.g. unix:///var/run/docker.sock: mount records "
         "no container uses any more (the engine gave up on an Unmount) are released "
         "(off by default)", metavar="unix:///PATH"),
    Flag("heal-every", "seconds between checks for stale mount records with --docker-host "
         "(default: 60)", "60", float),
    Flag("log-level", "default: info (one line per request)", "info", choices=LOG_LEVELS),
    Flag("log-format", "text or json (default: text)", "text", choices=("text", "json")),
)  # fmt: skip


def add_to(parser: argparse.ArgumentParser) -> None:
    """Add every flag of the table to ``parser``, each defaulting to its environment variable."""
    for flag in SERVE_FLAGS:
        if flag.switch:
            parser.add_argument(
                f"--{flag.name}", action="store_true", default=flag.value(), help=flag.help
            )
            continue
        parser.add_argument(
            f"--{flag.name}",
            type=flag.convert,
            default=flag.value(),
            choices=flag.choices,
            metavar=flag.metavar,
            help=flag.help,
        )
