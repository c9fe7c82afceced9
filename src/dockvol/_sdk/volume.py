"""The volume a driver is asked to act on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .errors import DriverError
from .options import SecretRef
from .secrets import SecretStore


@dataclass(frozen=True, slots=True)
class Volume:
    """A volume, already validated by the framework.

    ``name`` is the user's name, exactly as given (any string: never join it into a path).
    ``key`` is a filesystem-safe, unique name for it, derived once and recorded: use it for
    anything on disk. ``options`` holds every option of the driver's schema, parsed, with defaults.
    """

    name: str
    key: str
    options: Mapping[str, Any]
    created_at: datetime
    raw_options: Mapping[str, str] = field(default_factory=dict)
    _secrets: SecretStore | None = field(default=None, repr=False, compare=False)

    def secret(self, option: str) -> str:
        """The value of a secret option, resolved now from the plugin's secret store."""
        ref = self.options.get(option)
        if not isinstance(ref, SecretRef):
            raise DriverError(
                f"option {option!r} of volume {self.name!r} is not a secret reference"
            )
        store = self._secrets or SecretStore()
        return store.resolve(ref)
