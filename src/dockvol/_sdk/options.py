"""Option schemas: each volume option a driver accepts, its type, default and whether it is secret.

Options reach a plugin only as strings in ``docker volume create -o key=value``. A driver declares
them once, as ``Option`` objects in its ``options`` class attribute; the framework rejects unknown
keys (listing the valid ones), parses and validates values, fills in defaults and redacts secrets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

_UNITS: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE_RE: Final = re.compile(r"^\s*(\d+)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)

#: Prefix of a secret reference: ``-o passphrase=secret:NAME``.
SECRET_PREFIX: Final = "secret:"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: Marks an option without a default: it must be given at create.
REQUIRED: Final[Any] = _Required()


def parse_size(text: str) -> int:
    """``512M``, ``10G``, ``1048576`` -> bytes (binary units; a trailing ``B``/``iB`` is allowed)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(
            f"{text!r} is not a size; use a number with an optional unit, like 512M or 10G"
        )
    value = int(m.group(1)) * _UNITS[m.group(2).lower()]
    if value <= 0:
        raise ValueError("a size must be greater than zero")
    return value


def parse_mode(text: str) -> int:
    """An octal permission mode: ``755``, ``0750``, ``0o700``."""
    t = text.strip().lower().removeprefix("0o")
    if not re.fullmatch(r"0?[0-7]{1,4}", t):
        raise ValueError(f"{text!r} is not an octal mode; use digits 0-7, like 0755")
    mode = int(t, 8)
    if mode & 0o6000:
        # A set-id bit on a directory makes files created in it inherit its group (or, on some
        # systems, owner): a way for one container to hand another its identity.
        raise ValueError(
            f"{text!r} sets the setuid or setgid bit, which a volume's top directory must not "
            "have; use the permission bits (and the sticky bit 1000 if you need it), like 1777"
        )
    return mode


def parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean; use true or false")


def parse_id(text: str) -> int:
    """A numeric uid or gid (names would depend on the plugin's own /etc/passwd)."""
    t = text.strip()
    if not t.isdigit() or not t.isascii():
        raise ValueError(f"{text!r} is not a numeric id; use a number like 1000")
    value = int(t)
    if value > 0xFFFFFFFE:
        raise ValueError(f"{text!r} is out of range for an id")
    return value


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A reference to a secret (``secret:NAME``); the value is resolved only when a driver asks."""

    name: str

    def __str__(self) -> str:
        return SECRET_PREFIX + self.name


_SECRET_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True, slots=True)
class Option:
    """One option a driver accepts.

    ``parse`` turns the string the user gave into a value (raise ``ValueError`` with a helpful
    message to refuse it). Use the constructors (``Option.string()``, ``Option.size()``, ...) for
    the common kinds.
    """

    parse: Callable[[str], Any] = str
    default: Any = None
    help: str = ""
    secret: bool = False
    choices: tuple[str, ...] | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    # The common kinds -------------------------------------------------------------------------
    @classmethod
    def string(cls, default: str | None = None, help: str = "") -> Option:
        return cls(str, default, help)

    @classmethod
    def choice(cls, *choices: str, default: str | None = None, help: str = "") -> Option:
        return cls(str, default, help, choices=tuple(choices))

    @classmethod
    def integer(cls, default: int | None = None, help: str = "") -> Option:
        return cls(_parse_int, default, help)

    @classmethod
    def boolean(cls, default: bool = False, help: str = "") -> Option:
        return cls(parse_bool, default, help)

    @classmethod
    def size(cls, default: int | None = None, help: str = "") -> Option:
        """Bytes, given as ``512M``, ``10G``..."""
        return cls(parse_size, default, help)

    @classmethod
    def mode(cls, default: int | None = None, help: str = "") -> Option:
        """An octal permission mode, like ``0755``."""
        return cls(parse_mode, default, help)

    @classmethod
    def id(cls, default: int | None = None, help: str = "") -> Option:
        """A numeric uid or gid."""
        return cls(parse_id, default, help)

    @classmethod
    def access(cls, default: str = "multi", help: str = "") -> Option:
        """Who may mount a volume at once with a cluster registry: ``multi`` (every node) or
        ``single-node`` (one node at a time, held through the registry)."""
        return cls(
            str,
            default,
            help
            or "multi: every node may mount the volume at once; single-node: one node at a time "
            "(others are refused until it unmounts, or until its lease expires if it dies)",
            choices=("multi", "single-node"),
        )

    @classmethod
    def secret_ref(cls, default: str | None = None, help: str = "") -> Option:
        """A secret, given only by reference: ``-o key=secret:NAME``."""
        return cls(str, default, help, secret=True)


def _parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


#: Bounds on what ``-o`` can carry: far above any real option, far below what hurts.
MAX_OPTIONS: Final = 64
MAX_KEY_LEN: Final = 128
MAX_VALUE_BYTES: Final = 4096


def _check_text(schema: Mapping[str, Option], given: Mapping[str, str]) -> None:
    """Refuse what no option means: control characters (NUL, newline...) and huge values.

    Values reach mount commands, config files and logs; a newline or NUL in one is an injection
    attempt or a mistake, never a setting. Secret values are never echoed.
    """
    if len(given) > MAX_OPTIONS:
        raise ValueError(f"too many options ({len(given)}); at most {MAX_OPTIONS} are accepted")
    for key, raw in given.items():
        if not key or len(key) > MAX_KEY_LEN or not key.isprintable():
            shown = repr(key[:MAX_KEY_LEN]) + ("..." if len(key) > MAX_KEY_LEN else "")
            raise ValueError(
                f"option name {shown} is not valid; use a short printable name, like size"
            )
        opt = schema.get(key)
        secret = opt is not None and opt.secret
        if len(raw.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
            raise ValueError(f"option {key!r} is longer than {MAX_VALUE_BYTES} bytes")
        if any(_is_control(c) for c in raw):
            what = "" if secret else f"={raw!r}"
            raise ValueError(
                f"option {key!r}{what} contains control characters (NUL, newline, ...); "
                "option values must be printable text"
            )


def _is_control(c: str) -> bool:
    o = ord(c)
    return o < 0x20 or 0x7F <= o < 0xA0 or 0xD800 <= o <= 0xDFFF


def parse_options(schema: Mapping[str, Option], given: Mapping[str, str]) -> dict[str, Any]:
    """Check ``given`` against ``schema``; return every option's value, defaults filled in.

    Raises ``ValueError`` with a message meant for the user.
    """
    _check_text(schema, given)
    unknown = sorted(k for k in given if k not in schema)
    if unknown:
        valid = ", ".join(sorted(schema)) or "none (this driver takes no options)"
        names = ", ".join(repr(k) for k in unknown)
        raise ValueError(f"unknown option {names}; valid options: {valid}")
    values: dict[str, Any] = {}
    for key, opt in schema.items():
        if key not in given:
            if opt.required:
                raise ValueError(f"option {key!r} is required: add -o {key}=...")
            values[key] = opt.default
            continue
        raw = given[key]
        if opt.secret:
            values[key] = _secret_ref(key, raw)
            continue
        if opt.choices is not None and raw not in opt.choices:
            raise ValueError(
                f"option {key}={raw!r} is not valid; choose one of: {', '.join(opt.choices)}"
            )
        try:
            values[key] = opt.parse(raw)
        except ValueError as exc:
            raise ValueError(f"option {key}: {exc}") from None
    return values


def _secret_ref(key: str, raw: str) -> SecretRef:
    if not raw.startswith(SECRET_PREFIX):
        # Never echo the value: it may be the secret itself.
        raise ValueError(
            f"option {key!r} is secret and must be given by reference, not inline: "
            f"store it as a file in the plugin's secrets directory (or an environment variable "
            f"DOCKVOL_SECRET_<NAME>) and pass -o {key}={SECRET_PREFIX}<NAME>"
        )
    name = raw[len(SECRET_PREFIX) :]
    if not _SECRET_NAME_RE.match(name):
        # Not echoed either: a mistyped reference may hold the secret itself.
        raise ValueError(
            f"option {key!r}: the secret name after {SECRET_PREFIX!r} is not valid; use 1 to 128 "
            "letters, digits, '.', '_', '-', starting with a letter or digit"
        )
    return SecretRef(name)


def redact(schema: Mapping[str, Option], given: Mapping[str, str]) -> dict[str, str]:
    """Options as safe to show: secret references stay references; anything else secret is hidden."""
    out: dict[str, str] = {}
    for key, raw in given.items():
        opt = schema.get(key)
        if opt is not None and opt.secret and not raw.startswith(SECRET_PREFIX):
            out[key] = "<redacted>"
        else:
            out[key] = raw
    return out
