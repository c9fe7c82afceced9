"""Decode plugin replies the way the engine's Go code does, and say precisely why one fails.

Go's ``encoding/json`` matches keys to struct fields case-insensitively (the last matching key
wins), ignores unknown keys, accepts ``null`` for any field (it leaves the zero value), and
fails the whole call on a type mismatch. The engine's reply types (moby ``volume/drivers``,
``pkg/plugins``) are reproduced below.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeAlias

# A field type: "string", "time" (a string Go parses as RFC 3339), "map" (map[string]any),
# "[]string", or a nested struct spec (dict) behind a pointer, or a list of one spec (a slice).
Spec: TypeAlias = "dict[str, FieldType]"
FieldType: TypeAlias = "str | Spec | list[Spec]"

VOLUME: Spec = {"Name": "string", "Mountpoint": "string", "CreatedAt": "time", "Status": "map"}

REPLIES: dict[str, Spec] = {
    "Plugin.Activate": {"Implements": "[]string", "Err": "string"},
    "VolumeDriver.Capabilities": {"Capabilities": {"Scope": "string"}, "Err": "string"},
    "VolumeDriver.Create": {"Err": "string"},
    "VolumeDriver.Remove": {"Err": "string"},
    "VolumeDriver.Get": {"Volume": VOLUME, "Err": "string"},
    "VolumeDriver.List": {"Volumes": [VOLUME], "Err": "string"},
    "VolumeDriver.Path": {"Mountpoint": "string", "Err": "string"},
    "VolumeDriver.Mount": {"Mountpoint": "string", "Err": "string"},
    "VolumeDriver.Unmount": {"Err": "string"},
}


class GoDecodeError(ValueError):
    """The engine's JSON decoder would reject this reply."""


def _jtype(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"


def field(obj: dict[str, Any], name: str) -> Any:
    """The value Go would put in field ``name``: the last key equal to it ignoring case."""
    found: Any = None
    low = name.lower()
    for k, v in obj.items():
        if k.lower() == low:
            found = v
    return found


STRICT = frozenset({"time", "map"})


def decode(value: Any, spec: FieldType, where: str, strict: Collection[str] = STRICT) -> Any:
    """Check ``value`` against ``spec`` as Go would; return it with canonical field names.

    Types missing from ``strict`` ("time", "map") are passed through unchecked, so that a
    check can look at one field without failing on another check's subject."""
    if value is None:
        return None
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise GoDecodeError(f"{where} is a JSON {_jtype(value)}, the engine expects an object")
        out: dict[str, Any] = {}
        for fname, ftype in spec.items():
            low = fname.lower()
            for k, v in value.items():
                if k.lower() == low:
                    out[fname] = decode(v, ftype, f"{where}.{k}" if where else k, strict)
        return out
    if isinstance(spec, list):
        if not isinstance(value, list):
            raise GoDecodeError(f"{where} is a JSON {_jtype(value)}, the engine expects an array")
        return [decode(v, spec[0], f"{where}[{i}]", strict) for i, v in enumerate(value)]
    if spec in ("time", "map") and spec not in strict:
        return value
    if spec in ("string", "time"):
        if not isinstance(value, str):
            raise GoDecodeError(f"{where} is a JSON {_jtype(value)}, the engine expects a string")
        if spec == "time":
            parse_rfc3339(value, where)
        return value
    if spec == "map":
        if not isinstance(value, dict):
            raise GoDecodeError(
                f"{where} is a JSON {_jtype(value)}, the engine expects an object (or no field)"
            )
        return value
    if spec == "[]string":
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise GoDecodeError(f"{where} must be an array of strings")
        return value
    raise AssertionError(f"unknown spec {spec!r}")


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:(Z)|([+-])(\d{2}):(\d{2}))\Z"
)


def parse_rfc3339(text: str, where: str = "CreatedAt") -> datetime:
    """Parse ``text`` as every engine version does (Go's ``time.RFC3339``, strict since Go 1.20).

    The accepted form is the intersection of old and new Go parsers: ``2006-01-02T15:04:05Z``
    or with ``+07:00``, optional ``.fraction``, upper-case ``T`` and ``Z``, fields in range.
    """
    m = _RFC3339.match(text)
    if m is None:
        raise GoDecodeError(
            f"{where} {text!r} is not RFC 3339 (Go's time.RFC3339): write it like "
            f"2006-01-02T15:04:05.999999999Z or 2006-01-02T15:04:05+07:00, or leave the field out"
        )
    y, mo, d, h, mi, s = (int(m.group(i)) for i in range(1, 7))
    frac = m.group(7) or ""
    try:
        if m.group(8):
            tz = UTC
        else:
            oh, om = int(m.group(10)), int(m.group(11))
            if oh > 23 or om > 59:
                raise ValueError("time zone offset out of range")
            delta = timedelta(hours=oh, minutes=om)
            tz = timezone(-delta if m.group(9) == "-" else delta)
        micro = int((frac + "000000")[:6])
        return datetime(y, mo, d, h, mi, s, micro, tzinfo=tz)
    except ValueError as e:
        raise GoDecodeError(f"{where} {text!r} is out of range for Go's time parser: {e}") from e
