"""Holder keys of single-node volumes, and who uses a volume: the etcd side of access modes.

A node holds a single-node volume through ``P/holders/<name>``, written on its lease by a
transaction that succeeds only if nobody holds it. The messages here reach the user through
the engine: each names the other node and says what to do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import client as ec
from .client import EtcdClient
from .errors import Contended, HeldElsewhere
from .keys import Layout, decode_json, encode_json


@dataclass(frozen=True, slots=True)
class Holders:
    client: EtcdClient
    layout: Layout
    node: str
    ttl: int

    def hold(self, name: str, lease: int) -> None:
        """Hold ``name`` on ``lease``, or raise :class:`HeldElsewhere` naming the holder."""
        hk = self.layout.holder(name)
        mine = encode_json(
            {
                "node": self.node,
                "lease": f"{lease:x}",
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
                "pid": os.getpid(),
            }
        )
        for _ in range(5):
            ok, _, resp = self.client.txn(
                [ec.cmp_created(hk, False)], [ec.op_put(hk, mine, lease)], [ec.op_get(hk)]
            )
            if ok:
                return
            kvs = ec.range_kvs(resp[0]) if resp else []
            if not kvs:
                continue  # released meanwhile: try again
            cur = decode_json(kvs[0].value)
            if cur.get("node") != self.node:
                raise HeldElsewhere(self.held_elsewhere(name, cur))
            if kvs[0].lease == lease:
                return  # ours already (a retried request, or a reconcile)
            # Ours from before a restart (an older lease): move it to the current one.
            ok, _, _ = self.client.txn(
                [ec.cmp_mod(hk, kvs[0].mod_revision)], [ec.op_put(hk, mine, lease)]
            )
            if ok:
                return
        raise Contended(f"volume {name!r} is contended by other nodes; try again")

    def unhold(self, name: str, deadline: float | None = None) -> None:
        """Drop this node's hold on ``name`` (nothing if another node holds it)."""
        hk = self.layout.holder(name)
        kv = self.client.get(hk, deadline)
        if kv is not None and decode_json(kv.value).get("node") == self.node:
            self.client.txn([ec.cmp_mod(hk, kv.mod_revision)], [ec.op_delete(hk)], None, deadline)

    def users_elsewhere(self, name: str) -> set[str]:
        """Other nodes with ``name`` mounted or held: a fresh, consistent read from etcd."""
        _, _, resp = self.client.txn(
            [],
            [ec.op_get_prefix(self.layout.mounts_of(name)), ec.op_get(self.layout.holder(name))],
        )
        nodes = set()
        for kv in ec.range_kvs(resp[0]):
            parsed = self.layout.parse(kv.key)
            if parsed and len(parsed[1]) >= 2 and parsed[1][1] != self.node:
                nodes.add(parsed[1][1])
        for kv in ec.range_kvs(resp[1]):
            holder = decode_json(kv.value).get("node")
            if holder and holder != self.node:
                nodes.add(str(holder))
        return nodes

    # -- messages for the user -------------------------------------------------------------------
    def held_elsewhere(self, name: str, holder: Mapping[str, Any]) -> str:
        return (
            f"volume {name!r} is single-node and in use on node {holder.get('node')!r} "
            f"(since {holder.get('since', '?')}); it becomes free when the containers there stop "
            f"using it, or {self.ttl}s after that node stops answering. Use access=multi volumes "
            "to share data between nodes"
        )

    def fenced(self, name: str, why: str) -> str:
        return (
            f"node {self.node!r} cannot reach etcd ({why}), so it cannot mount single-node volume "
            f"{name!r}: another node may hold it. New mounts are refused until etcd answers; "
            "containers already running here are not affected"
        )

    def unreachable(self, what: str, exc: Exception) -> str:
        return (
            f"cannot {what}: etcd is unreachable from node {self.node!r} ({exc}); "
            "check the etcd cluster and this node's network, then try again"
        )

    @staticmethod
    def in_use(name: str, nodes: set[str]) -> str:
        return (
            f"volume {name!r} is in use on node(s) {', '.join(sorted(nodes))}; stop the "
            "containers using it there, then remove it"
        )
