"""CSI secrets through the driver's secret references, never stored.

An orchestrator sends secret values with a request (``secrets`` map: Swarm's
``docker volume create --secret KEY=SECRET``); the volume's options only name them, as for
the Docker front end (``-o passphrase=secret:KEY``). While a request runs, its values are
visible to ``Volume.secret()`` under their keys; afterwards they are gone. Nothing is written
anywhere, and the plugin's own secret store (``--secrets-dir``, environment) is the fallback.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from .._sdk.options import SecretRef
from .._sdk.secrets import SecretStore


class RequestSecrets(SecretStore):
    def __init__(self, fallback: SecretStore) -> None:
        super().__init__(fallback.directory)
        self.fallback = fallback
        self._lock = threading.Lock()
        # name -> values given by requests in flight (the newest wins).
        self._given: dict[str, list[str]] = {}

    @contextmanager
    def given(self, secrets: Mapping[str, str]) -> Iterator[None]:
        items = list(secrets.items())
        with self._lock:
            for name, value in items:
                self._given.setdefault(name, []).append(value)
        try:
            yield
        finally:
            with self._lock:
                for name, value in items:
                    values = self._given[name]
                    values.remove(value)
                    if not values:
                        del self._given[name]

    def resolve(self, ref: SecretRef) -> str:
        with self._lock:
            values = self._given.get(ref.name)
            value = values[-1] if values else None
        if value:
            return value
        return self.fallback.resolve(ref)
