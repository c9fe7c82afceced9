"""A test driver with a required secret option, resolved at every create and attach.

Serve it with ``--driver tests.security.secret_driver:SecretDriver`` (the repository root on
PYTHONPATH). It proves the framework's plumbing, not cryptography: the secret is resolved, its
length is checked, and nothing of it is written anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from dockvol import REQUIRED, DriverError, Option, Volume
from dockvol.drivers.local import LocalDriver


class SecretDriver(LocalDriver):
    options: ClassVar[Mapping[str, Option]] = {
        **LocalDriver.options,
        "passphrase": Option.secret_ref(default=REQUIRED, help="unlocks the volume"),
    }

    def _unlock(self, volume: Volume) -> None:
        if len(volume.secret("passphrase")) < 8:
            raise DriverError("the passphrase is too short (8 characters at least)")

    def create(self, volume: Volume) -> None:
        self._unlock(volume)
        super().create(volume)

    def mount(self, volume: Volume) -> Path:
        self._unlock(volume)  # needed again at every attach
        return super().mount(volume)
