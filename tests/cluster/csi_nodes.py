"""CSI "nodes" for cluster tests without a Docker engine: one ``dockvol serve --csi-endpoint``
process each, on one shared root and a real etcd. Node ``a`` reaches etcd only through a
:class:`CutProxy` per member, so a test can cut it off (``a.cut()``); the others talk to etcd
directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc

from dockvol._csi import csi_pb2_grpc as pb_grpc
from tests.support.plugin import Plugin

from .etcd import CutProxy, EtcdCluster
from .nodes import start_all


@dataclass
class CsiNode:
    name: str
    dir: Path
    plugin: Plugin
    channel: grpc.Channel
    proxies: list[CutProxy] = field(default_factory=list)

    @property
    def controller(self) -> pb_grpc.ControllerStub:
        return pb_grpc.ControllerStub(self.channel)  # type: ignore[no-untyped-call]

    @property
    def node(self) -> pb_grpc.NodeStub:
        return pb_grpc.NodeStub(self.channel)  # type: ignore[no-untyped-call]

    def cut(self) -> None:
        for p in self.proxies:
            p.cut()

    def heal(self) -> None:
        for p in self.proxies:
            p.heal()

    def stop(self) -> None:
        self.heal()
        self.channel.close()
        self.plugin.stop()
        for p in self.proxies:
            p.close()


C = TypeVar("C", bound=CsiNode)


def start_csi_node(
    cls: type[C], name: str, base: Path, root: Path, etcd: EtcdCluster, prefix: str,
    *serve_args: str, plugin: str,
) -> C:  # fmt: skip
    """``dockvol serve ROOT --registry ETCD+PREFIX --node NAME --csi-endpoint ...`` (plus
    ``serve_args``, named ``plugin``) in ``base/NAME``; node ``a`` behind cuttable proxies."""
    proxies = [CutProxy(e) for e in etcd.endpoints] if name == "a" else []
    url = "etcd://" + ",".join(p.endpoint for p in proxies) if proxies else etcd.url
    d = base / name
    d.mkdir()
    csi_sock = d / "csi.sock"
    try:
        p = Plugin.start(
            d / "p.sock", root, d / "state",
            "--registry", url + prefix, "--node", name, "--csi-endpoint", f"unix://{csi_sock}",
            *serve_args, name=plugin,
        )  # fmt: skip
    except BaseException:
        for proxy in proxies:
            proxy.close()
        raise
    return cls(name, d, p, grpc.insecure_channel(f"unix://{csi_sock}"), proxies)


def csi_pair(
    cls: type[C], base: Path, root: Path, etcd: EtcdCluster, prefix: str,
    *serve_args: str, plugin: str,
) -> Iterator[tuple[C, C]]:  # fmt: skip
    """Nodes a and b, started at once, for a fixture to ``yield from``; stopped at the end."""
    started, errors = start_all(
        lambda n: start_csi_node(cls, n, base, root, etcd, prefix, *serve_args, plugin=plugin),
        "ab",
    )
    try:
        if errors:
            raise errors[0]
        yield started["a"], started["b"]
    finally:
        for node in started.values():
            node.stop()
