"""Resolving secret references (``secret:NAME``) at the moment a driver needs the value."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from .errors import DriverError
from .options import SecretRef

ENV_PREFIX = "DOCKVOL_SECRET_"
#: A passphrase or key is small; anything bigger is a wrong file, not a secret.
MAX_SECRET_BYTES = 64 * 1024

log = logging.getLogger("dockvol.secrets")


class SecretStore:
    """Looks secrets up in a directory (file ``DIR/NAME``) and then in the environment.

    Values are read on every call and never cached, so rotating a secret file takes effect at the
    next attach, and nothing keeps a copy in memory longer than the driver does. No message or
    log line ever contains a value: only names and paths.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self._warned: set[str] = set()

    def resolve(self, ref: SecretRef) -> str:
        if self.directory is not None:
            value = self._from_file(ref.name, self.directory / ref.name)
            if value is not None:
                return value
        env_name = self.env_name(ref.name)
        value = os.environ.get(env_name)
        if value:
            return value
        where = f"a file {self.directory}/{ref.name} or " if self.directory else ""
        raise DriverError(
            f"secret {ref.name!r} not found: provide {where}the environment variable {env_name} "
            f"to the plugin"
        )

    @staticmethod
    def env_name(name: str) -> str:
        return ENV_PREFIX + name.upper().replace("-", "_").replace(".", "_")

    def _from_file(self, name: str, path: Path) -> str | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DriverError(f"cannot read secret {name!r} from {path}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                # A FIFO or device could block or stream forever.
                raise DriverError(f"secret {name!r}: {path} is not a regular file")
            if st.st_mode & 0o077 and name not in self._warned:
                self._warned.add(name)
                log.warning(
                    "secret file %s is readable by other users (mode %04o): chmod 600 it",
                    path,
                    st.st_mode & 0o777,
                )
            data = os.read(fd, MAX_SECRET_BYTES + 1)
        finally:
            os.close(fd)
        if len(data) > MAX_SECRET_BYTES:
            raise DriverError(
                f"secret {name!r}: {path} is larger than {MAX_SECRET_BYTES} bytes; "
                "it should hold only the secret"
            )
        try:
            value = data.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise DriverError(f"secret {name!r}: {path} is not UTF-8 text") from None
        if not value:
            raise DriverError(f"secret {name!r}: {path} is empty; write the secret into it")
        if "\x00" in value:
            raise DriverError(f"secret {name!r}: {path} contains a NUL byte")
        return value


def scrubbed_environ() -> dict[str, str]:
    """The plugin's environment without ``DOCKVOL_SECRET_*``: for the tools a driver runs.

    Child processes inherit the environment; a secret given that way must reach only the driver
    code that resolves it, not every mkfs or mount the plugin starts.
    """
    return {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
