"""Docker's volume plugin protocol: endpoints, request decoding and reply encoding.

The engine's requests have no Content-Type, an empty Host, bodies ending in a newline, an empty
body for Activate and possibly for retries, and ``Opts: null``. Keys are matched
case-insensitively, as the engine's Go decoder does. Replies are JSON objects; errors are
``{"Err": "..."}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

CONTENT_TYPE: Final = b"application/vnd.docker.plugins.v1+json"

ACTIVATE: Final = "/Plugin.Activate"
CAPABILITIES: Final = "/VolumeDriver.Capabilities"
CREATE: Final = "/VolumeDriver.Create"
REMOVE: Final = "/VolumeDriver.Remove"
MOUNT: Final = "/VolumeDriver.Mount"
UNMOUNT: Final = "/VolumeDriver.Unmount"
PATH: Final = "/VolumeDriver.Path"
GET: Final = "/VolumeDriver.Get"
LIST: Final = "/VolumeDriver.List"
# dockvol's own extensions, used by `dockvol volume resize` and `dockvol status`.
RESIZE: Final = "/Dockvol.Resize"
STATUS: Final = "/Dockvol.Status"
RELEASE: Final = "/Dockvol.Release"

ENDPOINTS: Final = (
    ACTIVATE,
    CAPABILITIES,
    CREATE,
    REMOVE,
    MOUNT,
    UNMOUNT,
    PATH,
    GET,
    LIST,
    RESIZE,
    STATUS,
    RELEASE,
)

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


class BadRequest(Exception):
    """The request cannot be understood; the message says how to fix it."""


def decode(body: bytes) -> dict[str, Any]:
    """Parse a request body into a dict with the engine's canonical key case."""
    if not body.strip():
        return {}  # Activate, and the engine's empty-body retries
    try:
        data = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(
            f"the request body is not valid JSON ({exc}); send a JSON object"
        ) from None
    except RecursionError:
        raise BadRequest(
            "the request body nests JSON too deeply; send a flat JSON object"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def field(data: Mapping[str, Any], key: str) -> Any:
    """``data[key]``, matching the key case-insensitively like Go's encoding/json."""
    if key in data:
        return data[key]
    low = key.lower()
    for k, v in data.items():
        if k.lower() == low:
            return v
    return None


def name_of(data: Mapping[str, Any]) -> str:
    name = field(data, "Name")
    if not isinstance(name, str):
        raise BadRequest('the request needs "Name": a string with the volume name')
    return name


def mount_id_of(data: Mapping[str, Any]) -> str:
    mid = field(data, "ID")
    if not isinstance(mid, str):
        raise BadRequest('the request needs "ID": the mount ID string the engine sends')
    return mid


def opts_of(data: Mapping[str, Any]) -> dict[str, str]:
    opts = field(data, "Opts")
    if opts is None:
        return {}
    if not isinstance(opts, dict) or not all(isinstance(v, str) for v in opts.values()):
        raise BadRequest(
            '"Opts" must be an object of string values (docker volume create -o key=value)'
        )
    return opts


def encode(reply: Any) -> bytes:
    return _encoder.encode(reply)


def error(message: str) -> bytes:
    return _encoder.encode({"Err": message})


EMPTY: Final = b"{}"
