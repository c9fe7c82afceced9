"""Where the cluster's records live in etcd, and how they are encoded.

Under the prefix ``P`` (the URL's path, else ``/dockvol/<plugin name>``)::

    P/volumes/<name>                   {"name","key","options","created_at"}   durable
    P/mounts/<name>/<node>/<mount-id>  {"count","mountpoint"}                  on the node's lease
    P/holders/<name>                   {"node","lease","since"}                on the holder's lease
    P/nodes/<node>                     {"since","pid"}                         on the node's lease

``<name>`` and ``<node>`` are percent-encoded (volume names may hold ``/``), so every key splits
back unambiguously. Mount records, holders and node keys ride on the node's lease: when a node
dies they vanish after the TTL, so a dead node never keeps a volume "in use" forever. The node's
own mount records are kept durably on the node too (see ``_cluster/registry.py``) and republished.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote

from .._registry.base import MountRecord, VolumeRecord

VOLUMES, MOUNTS, HOLDERS, NODES = "volumes", "mounts", "holders", "nodes"


def _q(s: str) -> str:
    return quote(s, safe="")


@dataclass(frozen=True, slots=True)
class Layout:
    prefix: str

    def root(self) -> bytes:
        return (self.prefix.rstrip("/") + "/").encode()

    def kind(self, kind: str) -> bytes:
        return self.root() + kind.encode() + b"/"

    def volume(self, name: str) -> bytes:
        return self.kind(VOLUMES) + _q(name).encode()

    def mounts_of(self, name: str) -> bytes:
        return self.kind(MOUNTS) + _q(name).encode() + b"/"

    def mount(self, name: str, node: str, mount_id: str) -> bytes:
        return self.mounts_of(name) + f"{_q(node)}/{_q(mount_id)}".encode()

    def holder(self, name: str) -> bytes:
        return self.kind(HOLDERS) + _q(name).encode()

    def node(self, node: str) -> bytes:
        return self.kind(NODES) + _q(node).encode()

    def parse(self, key: bytes) -> tuple[str, list[str]] | None:
        """``(kind, [decoded parts])`` for one of our keys, else ``None``."""
        root = self.root()
        if not key.startswith(root):
            return None
        kind, _, rest = key[len(root) :].decode("utf-8", "replace").partition("/")
        return kind, [unquote(p) for p in rest.split("/")]


# -- values ------------------------------------------------------------------------------------
def encode_volume(rec: VolumeRecord) -> bytes:
    return json.dumps(
        {
            "name": rec.name,
            "key": rec.key,
            "options": dict(rec.options),
            "created_at": rec.created_at.isoformat(),
        },
        sort_keys=True,
    ).encode()


def decode_volume(value: bytes) -> VolumeRecord:
    d = json.loads(value)
    return VolumeRecord(
        name=d["name"],
        key=d["key"],
        options={str(k): str(v) for k, v in d["options"].items()},
        created_at=datetime.fromisoformat(d["created_at"]),
    )


def encode_mount(m: MountRecord) -> bytes:
    return json.dumps({"count": m.count, "mountpoint": m.mountpoint}, sort_keys=True).encode()


def decode_mount(mount_id: str, node: str, value: bytes) -> MountRecord:
    d = json.loads(value)
    return MountRecord(mount_id, int(d["count"]), str(d["mountpoint"]), node)


def encode_json(d: dict[str, Any]) -> bytes:
    return json.dumps(d, sort_keys=True).encode()


def decode_json(value: bytes) -> dict[str, Any]:
    try:
        d = json.loads(value)
    except ValueError:
        return {}
    return d if isinstance(d, dict) else {}
