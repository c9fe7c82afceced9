"""dockvol's one exception tree. Every refusal a user can act on is a :class:`DockvolError`.

::

    DockvolError              anything dockvol refuses, with a message for a person
    ├── DriverError           a driver could not do what was asked (raised by drivers)
    └── VolumeError           the volume service refused the request
        ├── InvalidRequest    a bad name, option, size or mount ID: fix the request
        ├── NotFound          no volume of that name
        ├── AlreadyExists     the name exists with other options
        └── InUse             mounted here or held by another node: stop its users first

Front ends map the classes, never the messages: the Docker protocol sends every one as
``{"Err": message}`` (a ``NotFound`` is how the engine learns a name is free); CSI maps them to
gRPC codes. Any other exception is a bug: front ends answer with a generic message and log the
traceback, never put it on the wire.
"""

from __future__ import annotations


class DockvolError(Exception):
    """Base of every error dockvol reports to a user. ``message`` says what failed and what to
    do about it; it never contains a secret."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class DriverError(DockvolError):
    """A failure the user can act on, raised by a driver.

    The message is sent to the engine as ``{"Err": message}`` and shown by the docker CLI, so
    write it for a person: say what failed and what to do about it. Never put secrets in it.
    """


class VolumeError(DockvolError):
    """The volume service refused the request."""


class InvalidRequest(VolumeError):
    """The request itself is wrong: a name, option, size or mount ID the user must fix."""


class NotFound(VolumeError):
    """No volume of that name."""


class AlreadyExists(VolumeError):
    """A volume of that name exists with different options."""


class InUse(VolumeError):
    """The volume is in use (mounted on this host, or held by another node)."""
