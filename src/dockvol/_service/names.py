"""Volume names (arbitrary strings from the engine) and the safe on-disk keys derived from them."""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_NAME_BYTES = 255
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_PREFIX_LEN = 40


def check_name(name: object) -> str:
    """Return ``name`` if the framework accepts it, else raise ``ValueError`` (for the user).

    The engine itself does not validate plugin volume names: they may hold ``/``, ``..``, spaces
    or any unicode. We accept all of that (keys make them safe on disk) and refuse only what no
    person means: empty names, control characters, and names too long for any filesystem.
    """
    if not isinstance(name, str):
        raise ValueError("the volume name must be a string")
    if not name:
        raise ValueError(
            "the volume name is empty; give a name, e.g. docker volume create -d DRIVER myvol"
        )
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise ValueError(
            "the volume name contains control characters (NUL, newline, ...); use printable characters"
        )
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise ValueError(
            f"the volume name is longer than {MAX_NAME_BYTES} bytes; use a shorter name"
        )
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        raise ValueError("the volume name is not valid unicode")
    return name


def volume_key(name: str) -> str:
    """A filesystem-safe, unique key for ``name``: a readable prefix and a hash of the exact name.

    The hash makes keys distinct for names that sanitise alike (``a b`` and ``a_b``); the prefix
    never starts with a dot or a dash, so ``.``, ``..`` and option-like names cannot be produced.
    """
    prefix = _UNSAFE.sub("_", name)[:_PREFIX_LEN].lstrip(".-") or "v"
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]
    return f"{prefix}-{digest}"
