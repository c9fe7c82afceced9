"""ext4's native encryption (fscrypt, v2 policies) through its ioctls: no external tool.

Structures and numbers are those of ``linux/fscrypt.h`` (kernel 5.4 and newer). A v2 key lives in
the filesystem's own keyring (per superblock, not a process keyring): added with
``FS_IOC_ADD_ENCRYPTION_KEY``, which returns its identifier (a hash of the key), and removed with
``FS_IOC_REMOVE_ENCRYPTION_KEY``. A directory's policy names the identifier of its key.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final


def _iowr(nr: int, size: int, direction: int = 3) -> int:
    # _IOC(dir, 'f', nr, size): dir 3 = read|write, 2 = "read" (the kernel's naming).
    return (direction << 30) | (size << 16) | (ord("f") << 8) | nr


POLICY_V2: Final = 2
MODE_AES_256_XTS: Final = 1  # file contents
MODE_AES_256_CTS: Final = 4  # file names
FLAGS_PAD_32: Final = 0x03  # names padded to 32 bytes: leaks less about their length
KEY_SPEC_TYPE_IDENTIFIER: Final = 2
IDENTIFIER_SIZE: Final = 16
#: The master key's size: the largest the kernel takes (AES-256-XTS needs 64 bytes of key).
KEY_SIZE: Final = 64

_POLICY_V2: Final = struct.Struct("<BBBBBxxx16s")  # version, modes, flags, log2_data_unit_size
_KEY_SPEC: Final = struct.Struct("<II32s")  # type, reserved, identifier (union of 32 bytes)
_ADD_KEY_HEAD: Final = struct.Struct("<40sII32x")  # key_spec, raw_size, key_id, reserved
_REMOVE_KEY: Final = struct.Struct("<40sI20x")  # key_spec, removal_status_flags (out)
_KEY_STATUS: Final = struct.Struct("<40s24xIII52x")  # key_spec, status, flags, user_count

FS_IOC_SET_ENCRYPTION_POLICY: Final = _iowr(19, 12, direction=2)  # sized as the v1 struct
FS_IOC_GET_ENCRYPTION_POLICY_EX: Final = _iowr(22, 9)
FS_IOC_ADD_ENCRYPTION_KEY: Final = _iowr(23, _ADD_KEY_HEAD.size)
FS_IOC_REMOVE_ENCRYPTION_KEY: Final = _iowr(24, _REMOVE_KEY.size)
FS_IOC_GET_ENCRYPTION_KEY_STATUS: Final = _iowr(26, _KEY_STATUS.size)

KEY_STATUS_ABSENT: Final = 1
KEY_STATUS_PRESENT: Final = 2
KEY_STATUS_INCOMPLETELY_REMOVED: Final = 3
REMOVAL_FILES_BUSY: Final = 0x1


@contextmanager
def _opened(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        yield fd
    finally:
        os.close(fd)


def _spec(identifier: bytes) -> bytes:
    return _KEY_SPEC.pack(KEY_SPEC_TYPE_IDENTIFIER, 0, identifier)


def key_identifier(key: bytes | bytearray) -> bytes:
    """The identifier the kernel derives for a v2 master key: HKDF-SHA512 with no salt and the
    info ``"fscrypt\\0" + 0x01`` (HKDF_CONTEXT_KEY_IDENTIFIER), first 16 bytes. Computing it here
    lets a wrong key be refused before it ever reaches the kernel."""
    prk = hmac.new(b"\0" * 64, bytes(key), hashlib.sha512).digest()
    return hmac.new(prk, b"fscrypt\0\x01\x01", hashlib.sha512).digest()[:IDENTIFIER_SIZE]


def add_key(mountpoint: Path, key: bytearray) -> bytes:
    """Add ``key`` to the keyring of the filesystem mounted on ``mountpoint``; its identifier.

    Adding a key that is already there is harmless (and revives an incompletely removed one)."""
    arg = bytearray(_ADD_KEY_HEAD.pack(_spec(b""), len(key), 0)) + key
    try:
        with _opened(mountpoint) as fd:
            fcntl.ioctl(fd, FS_IOC_ADD_ENCRYPTION_KEY, arg)
        spec = bytes(arg[: _KEY_SPEC.size])
    finally:
        arg[:] = bytes(len(arg))  # no copy of the key left in this buffer
    ident: bytes = _KEY_SPEC.unpack(spec)[2]
    return ident[:IDENTIFIER_SIZE]


def remove_key(mountpoint: Path, identifier: bytes) -> int:
    """Remove the key from the filesystem's keyring: the removal status flags
    (:data:`REMOVAL_FILES_BUSY`: files still open keep their data readable until closed), or
    ``-1`` if the key was not there."""
    arg = bytearray(_REMOVE_KEY.pack(_spec(identifier), 0))
    with _opened(mountpoint) as fd:
        try:
            fcntl.ioctl(fd, FS_IOC_REMOVE_ENCRYPTION_KEY, arg)
        except OSError as exc:
            if exc.errno == errno.ENOKEY:
                return -1
            raise
    flags: int = _REMOVE_KEY.unpack(arg)[1]
    return flags


def key_status(mountpoint: Path, identifier: bytes) -> int:
    """:data:`KEY_STATUS_ABSENT`, :data:`KEY_STATUS_PRESENT` or
    :data:`KEY_STATUS_INCOMPLETELY_REMOVED`."""
    with _opened(mountpoint) as fd:
        return key_status_of(fd, identifier)


def key_status_of(fd: int, identifier: bytes) -> int:
    """:func:`key_status` through an open directory of the filesystem."""
    arg = bytearray(_KEY_STATUS.pack(_spec(identifier), 0, 0, 0))
    fcntl.ioctl(fd, FS_IOC_GET_ENCRYPTION_KEY_STATUS, arg)
    status: int = _KEY_STATUS.unpack(arg)[1]
    return status


def set_policy(directory: Path, identifier: bytes) -> None:
    """Make the empty ``directory`` encrypted (v2: AES-256-XTS contents, AES-256-CTS names) with
    the key ``identifier``, which must have been added. Everything created in it inherits it."""
    policy = _POLICY_V2.pack(
        POLICY_V2, MODE_AES_256_XTS, MODE_AES_256_CTS, FLAGS_PAD_32, 0, identifier
    )
    with _opened(directory) as fd:
        fcntl.ioctl(fd, FS_IOC_SET_ENCRYPTION_POLICY, bytearray(policy))


def policy_identifier(directory: Path) -> bytes | None:
    """The key identifier of ``directory``'s v2 policy, or ``None`` if it is not encrypted."""
    # struct fscrypt_get_policy_ex_arg: __u64 policy_size (in/out), then the policy.
    arg = bytearray(struct.pack("<Q", _POLICY_V2.size) + bytes(_POLICY_V2.size))
    with _opened(directory) as fd:
        try:
            fcntl.ioctl(fd, FS_IOC_GET_ENCRYPTION_POLICY_EX, arg)
        except OSError as exc:
            if exc.errno in (errno.ENODATA, errno.ENOENT):
                return None  # not encrypted
            raise
    version, *_, identifier = _POLICY_V2.unpack(arg[8 : 8 + _POLICY_V2.size])
    if version != POLICY_V2:
        return None
    ident: bytes = identifier
    return ident
