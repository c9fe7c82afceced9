"""Access modes of cluster volumes: who may mount a volume at the same time.

``multi``: every node may mount it at once (a shared directory). ``single-node``: one node at a
time, held through an etcd lease while any container on that node uses it. A driver offers the
choice by putting :func:`access_option` in its ``options``; the registry reads the user's
choice back from the volume's stored options.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from .._sdk.options import Option

Access = Literal["multi", "single-node"]
MULTI: Final = "multi"
SINGLE_NODE: Final = "single-node"
ACCESS_MODES: Final = (MULTI, SINGLE_NODE)
OPTION: Final = "access"


def access_option(default: Access = MULTI) -> Option:
    return Option.access(default)


def access_of(options: Mapping[str, str], default: str = MULTI) -> str:
    value = options.get(OPTION, default)
    return value if value in ACCESS_MODES else default
