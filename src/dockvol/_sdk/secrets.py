"""Resolving secret references (``secret:NAME``) at the moment a driver needs the value."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DriverError
from .options import SecretRef

ENV_PREFIX = "DOCKVOL_SECRET_"


class SecretStore:
    """Looks secrets up in a directory (file ``DIR/NAME``) and then in the environment.

    Values are read on every call and never cached, so rotating a secret file takes effect at the
    next attach, and nothing keeps a copy in memory longer than the driver does.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory

    def resolve(self, ref: SecretRef) -> str:
        if self.directory is not None:
            path = self.directory / ref.name
            try:
                data = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise DriverError(
                    f"cannot read secret {ref.name!r} from {path}: {exc.strerror}"
                ) from None
            else:
                return data.rstrip("\r\n")
        env_name = ENV_PREFIX + ref.name.upper().replace("-", "_").replace(".", "_")
        value = os.environ.get(env_name)
        if value is not None:
            return value
        where = f"a file {self.directory}/{ref.name} or " if self.directory else ""
        raise DriverError(
            f"secret {ref.name!r} not found: provide {where}the environment variable {env_name} "
            f"to the plugin"
        )
