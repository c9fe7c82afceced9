"""Errors a driver raises; their message reaches the user through the engine."""

from __future__ import annotations


class DriverError(Exception):
    """A failure the user can act on.

    The message is sent to the engine as ``{"Err": message}`` and shown by the docker CLI, so
    write it for a person: say what failed and what to do about it. Never put secrets in it.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
