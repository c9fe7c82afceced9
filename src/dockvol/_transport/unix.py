"""The plugin's unix socket: permissions, stale sockets, clean removal."""

from __future__ import annotations

import contextlib
import grp
import os
import socket
import stat
from pathlib import Path

MAX_PATH = 107  # sun_path is 108 bytes with the terminating NUL

# The socket files this process bound: path -> (device, inode, ctime) of the file bind() made.
# The socket's own fd cannot tell (fstat of a socket fd describes the socket, not the file);
# ctime tells our file from a later one that reuses a freed inode number.
_BOUND: dict[str, tuple[int, int, int]] = {}


class SocketError(Exception):
    """The socket cannot be used; the message says what to do."""


def default_group() -> str | None:
    """``docker`` if that group exists (the engine's users), else root only."""
    try:
        grp.getgrnam("docker")
    except KeyError:
        return None
    return "docker"


def bind_unix(path: Path, group: str | None) -> socket.socket:
    """A listening socket at ``path``, mode 0660, owned by ``group``.

    A socket left by a dead process is replaced; a live one is refused (two plugins on one
    socket would split the engine's requests between them).
    """
    raw = os.fsencode(path)
    if len(raw) > MAX_PATH:
        raise SocketError(
            f"socket path {path} is {len(raw)} bytes; unix sockets allow {MAX_PATH}: choose a shorter --socket"
        )
    gid = -1
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise SocketError(
                f"group {group!r} does not exist: create it or pass another --socket-group"
            ) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)  # born 0660: no window where others could connect
    try:
        sock.bind(raw)
    except OSError as exc:
        sock.close()
        raise SocketError(f"cannot bind {path}: {exc.strerror}") from None
    finally:
        os.umask(old)
    if gid != -1:
        os.chown(raw, -1, gid)
    os.chmod(raw, 0o660)
    made = os.lstat(raw)
    _BOUND[os.fsdecode(raw)] = (made.st_dev, made.st_ino, made.st_ctime_ns)
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _clear_stale(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketError(
            f"{path} exists and is not a socket: move it away or choose another --socket"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(os.fsencode(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # nobody listens: left by a dead process
        return
    except OSError:
        pass  # timeout or other: assume alive
    finally:
        probe.close()
    raise SocketError(
        f"another process is serving {path}; stop it first (or choose another --socket / --name)"
    )


def remove_socket(path: Path, sock: socket.socket | None = None) -> None:
    """Remove the socket file this process bound at ``path``, only if it is still that file.

    A file another process has since put there (a new plugin started on the same path) stays.
    ``sock`` is accepted for callers that have it; open or closed, it does not matter.
    """
    key = os.fsdecode(os.fsencode(path))
    made = _BOUND.get(key)
    if made is None:
        return
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if (st.st_dev, st.st_ino, st.st_ctime_ns) == made:
            path.unlink()
    _BOUND.pop(key, None)
