"""systemd integration, stdlib only: socket activation (LISTEN_FDS) and readiness (sd_notify).

Both are no-ops outside systemd, so ``dockvol serve`` can call them unconditionally.
"""

from __future__ import annotations

import os
import socket
import time

#: The first file descriptor systemd passes (SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3


def inherited_socket(*, unset_environment: bool = True) -> socket.socket | None:
    """The listening socket systemd handed over as fd 3, or ``None`` if there is none.

    Honoured only when ``LISTEN_PID`` names this process (a child must not take its parent's
    sockets). dockvol serves exactly one socket: more than one is an error for the user.
    The variables are removed so that subprocesses do not see them.
    """
    pid, fds = os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDS")
    if unset_environment:
        for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(var, None)
    if not pid or not fds:
        return None
    try:
        if int(pid) != os.getpid():
            return None
        count = int(fds)
    except ValueError:
        return None
    if count == 0:
        return None
    if count != 1:
        raise RuntimeError(
            f"systemd passed {count} sockets (LISTEN_FDS={count}); dockvol serves one: "
            "list a single ListenStream= in dockvol.socket"
        )
    try:
        sock = socket.socket(fileno=LISTEN_FDS_START)
    except OSError as exc:
        raise RuntimeError(
            f"LISTEN_FDS=1 but fd {LISTEN_FDS_START} is not a socket ({exc.strerror}): "
            "start dockvol from dockvol.socket, or unset LISTEN_FDS"
        ) from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise RuntimeError("the socket systemd passed is not a stream socket: use ListenStream=")
    os.set_inheritable(LISTEN_FDS_START, False)
    return sock


def notify(state: str) -> bool:
    """Send ``state`` (``READY=1``, ``STOPPING=1``, ``STATUS=...``) to systemd.

    Returns False when not run by systemd with ``Type=notify`` (no ``NOTIFY_SOCKET``) or when
    the message cannot be delivered: readiness reporting never stops the plugin.
    """
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):  # abstract namespace
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(state.encode())
    except OSError:
        return False
    return True


def seconds_since_start() -> float:
    """How long this process has run (from /proc): the plugin's time to readiness."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError):
        return -1.0
