"""Encryption at rest for ext4 volumes (``-o encrypt=true -o passphrase=secret:NAME``).

Layout inside the volume's filesystem::

    /                         unencrypted root (ext4 refuses to encrypt it; e2fsck needs lost+found)
    /.dockvol-encryption.json the KDF's salt and cost, the key's identifier: nothing secret
    /lost+found
    /data/                    encrypted (fscrypt v2 policy): what containers get as the volume

The key is derived from the passphrase with scrypt and a per-volume random salt, and is
never stored: every attach resolves the secret, derives the key, checks its identifier against
the one recorded at create (a wrong passphrase is refused before the kernel sees the key), and
adds it to the filesystem's keyring. Detach removes it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dockvol import DriverError

from . import fscrypt

log = logging.getLogger("dockvol.drivers.block")

HEADER_NAME: Final = ".dockvol-encryption.json"
#: The directory containers see: the filesystem's root cannot carry a policy.
DATA_DIR: Final = "data"
_FORMAT: Final = 1
_SALT_BYTES: Final = 32
#: scrypt cost: about 32 MiB and 0.1-0.2 s per attach on a small VM; recorded per volume.
_N, _R, _P = 1 << 15, 8, 1


@dataclass(frozen=True, slots=True)
class Header:
    salt: bytes
    n: int
    r: int
    p: int
    identifier: bytes

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _FORMAT,
                "kdf": "scrypt",
                "salt": self.salt.hex(),
                "n": self.n,
                "r": self.r,
                "p": self.p,
                "policy": "fscrypt-v2 aes-256-xts aes-256-cts pad-32",
                "key_identifier": self.identifier.hex(),
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Header:
        d = json.loads(text)
        if d.get("format") != _FORMAT or d.get("kdf") != "scrypt":
            raise ValueError(f"unknown format {d.get('format')!r} / kdf {d.get('kdf')!r}")
        n, r, p = int(d["n"]), int(d["r"]), int(d["p"])
        # Bounded: a tampered header must not make the plugin allocate gigabytes.
        if n < 2 or n & (n - 1) or n > 1 << 20 or not 1 <= r <= 32 or not 1 <= p <= 16:
            raise ValueError("scrypt parameters out of range")
        salt, ident = bytes.fromhex(d["salt"]), bytes.fromhex(d["key_identifier"])
        if len(salt) < 16 or len(ident) != fscrypt.IDENTIFIER_SIZE:
            raise ValueError("salt or key identifier has the wrong size")
        return cls(salt, n, r, p, ident)


def derive(passphrase: str, header: Header) -> bytearray:
    """The 64-byte master key for ``passphrase`` (scrypt with the volume's salt and cost)."""
    key = hashlib.scrypt(
        passphrase.encode(),
        salt=header.salt,
        n=header.n,
        r=header.r,
        p=header.p,
        maxmem=129 * header.n * header.r * header.p + (1 << 20),
        dklen=fscrypt.KEY_SIZE,
    )
    return bytearray(key)


def served(fs_root: Path) -> Path:
    """The directory containers get."""
    return fs_root / DATA_DIR


def _kernel_error(what: str, exc: OSError) -> DriverError:
    hint = "check the kernel log (dmesg)"
    if exc.errno in (errno.ENOTTY, errno.EOPNOTSUPP):
        hint = (
            "this kernel or filesystem does not support ext4 encryption: the kernel needs "
            "CONFIG_FS_ENCRYPTION and the filesystem the encrypt feature (tune2fs -l)"
        )
    return DriverError(f"{what} failed: {exc.strerror}; {hint}")


def setup(fs_root: Path, passphrase: str) -> None:
    """At create, on the freshly made and mounted filesystem: write the header and make the empty
    encrypted directory. The key is removed again before returning."""
    salt = os.urandom(_SALT_BYTES)
    key = derive(passphrase, Header(salt, _N, _R, _P, b""))
    try:
        ident = fscrypt.key_identifier(key)
        try:
            added = fscrypt.add_key(fs_root, key)
        except OSError as exc:
            raise _kernel_error("adding the encryption key", exc) from None
    finally:
        key[:] = bytes(len(key))
    try:
        if added != ident:
            raise DriverError(
                "adding the encryption key failed: the kernel derived another key identifier "
                "than expected; this kernel's fscrypt is not the one dockvol knows"
            )
        header = Header(salt, _N, _R, _P, ident)
        _write_file(fs_root / HEADER_NAME, header.to_json())
        data = served(fs_root)
        try:
            data.mkdir(mode=0o755)
            fscrypt.set_policy(data, ident)
        except OSError as exc:
            raise _kernel_error(f"making {data} encrypted", exc) from None
        _fsync(fs_root)
    finally:
        _remove(fs_root, ident)


def read_header(fs_root: Path, volume: str) -> Header:
    path = fs_root / HEADER_NAME
    try:
        return Header.from_json(path.read_text())
    except FileNotFoundError:
        raise DriverError(
            f"volume {volume!r} is encrypted but its filesystem has no {HEADER_NAME}: the image was "
            f"changed outside dockvol; restore it from a backup"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DriverError(
            f"volume {volume!r}: cannot read its encryption header {path}: {exc}; the image was "
            f"changed outside dockvol; restore it from a backup"
        ) from None


def unlock(fs_root: Path, passphrase: str, volume: str, secret_name: str) -> None:
    """Add the key derived from ``passphrase`` to the mounted filesystem's keyring, after checking
    that it is this volume's key; check that the served directory really is encrypted with it."""
    header = read_header(fs_root, volume)
    key = derive(passphrase, header)
    try:
        if fscrypt.key_identifier(key) != header.identifier:
            raise DriverError(
                f"wrong passphrase for encrypted volume {volume!r}: the secret {secret_name!r} "
                f"does not unlock it; put the passphrase the volume was created with into that "
                f"secret (file in the plugin's --secrets-dir or DOCKVOL_SECRET_* variable) and "
                f"try again"
            )
        try:
            added = fscrypt.add_key(fs_root, key)
        except OSError as exc:
            raise _kernel_error(f"unlocking volume {volume!r}", exc) from None
    finally:
        key[:] = bytes(len(key))
    data = served(fs_root)
    try:
        policy = fscrypt.policy_identifier(data)
    except OSError as exc:
        _remove(fs_root, added)
        raise DriverError(
            f"volume {volume!r}: cannot read the encryption policy of {data}: {exc.strerror}; "
            f"the image was changed outside dockvol; restore it from a backup"
        ) from None
    if added != header.identifier or policy != header.identifier:
        _remove(fs_root, added)
        # Never serve plaintext in place of an encrypted volume.
        raise DriverError(
            f"volume {volume!r}: {data} is not encrypted with the volume's key; the image was "
            f"changed outside dockvol; refusing to serve it"
        )


def lock(fs_root: Path, volume: str) -> None:
    """Remove the volume's key from the mounted filesystem's keyring (before unmounting it: a copy
    of the mount left in another namespace must not keep it usable). Best effort: logs problems."""
    try:
        header = read_header(fs_root, volume)
    except DriverError as exc:
        log.warning("%s", exc)
        return
    _remove(fs_root, header.identifier, volume)


def forget_key(fs_root: Path, identifier: bytes, volume: str) -> None:
    """Remove the key ``identifier`` from the keyring of a filesystem that was just shut down (a
    fence: the header was read before). The kernel wipes the key's secret first, then syncs the
    filesystem to evict its inodes: on a shut-down filesystem that sync fails (EIO), which is
    expected and leaves the key removed. Best effort: logs other problems."""
    try:
        fscrypt.remove_key(fs_root, identifier)
    except OSError as exc:
        if exc.errno != errno.EIO:
            log.warning(
                "volume %r: removing the encryption key from %s failed: %s",
                volume,
                fs_root,
                exc.strerror,
            )


def _remove(fs_root: Path, identifier: bytes, volume: str | None = None) -> None:
    try:
        flags = fscrypt.remove_key(fs_root, identifier)
    except OSError as exc:
        log.warning("removing the encryption key from %s failed: %s", fs_root, exc.strerror)
        return
    if flags > 0 and flags & fscrypt.REMOVAL_FILES_BUSY and volume is not None:
        log.warning(
            "volume %r: files are still open in %s; the key is removed, and their data stays "
            "readable only by those processes until they close them",
            volume,
            fs_root,
        )


def _write_file(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
