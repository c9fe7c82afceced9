"""dockvol: write and run Docker volume plugins in Python.

A plugin author needs only this module::

    from dockvol import Driver, DriverError, Option, Volume

and, for driver code that runs tools or deletes files, :mod:`dockvol.host`.

Everything whose name starts with an underscore is private and may change.
"""

from ._sdk.context import ClusterHold, HostContext
from ._sdk.driver import Driver, Scope, Sharing
from ._sdk.errors import (
    AlreadyExists,
    DockvolError,
    DriverError,
    InUse,
    InvalidRequest,
    NotFound,
    VolumeError,
)
from ._sdk.options import REQUIRED, Option, SecretRef
from ._sdk.volume import Volume

__version__ = "0.1.0"

__all__ = [
    "REQUIRED",
    "AlreadyExists",
    "ClusterHold",
    "DockvolError",
    "Driver",
    "DriverError",
    "HostContext",
    "InUse",
    "InvalidRequest",
    "NotFound",
    "Option",
    "Scope",
    "SecretRef",
    "Sharing",
    "Volume",
    "VolumeError",
    "__version__",
    "create_app",
]


def __getattr__(name: str) -> object:
    # The ASGI app pulls in the server-side modules: import it only when asked for.
    if name == "create_app":
        from ._wire.app import create_app

        return create_app
    raise AttributeError(name)
