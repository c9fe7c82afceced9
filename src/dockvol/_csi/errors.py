"""dockvol's error classes as CSI's gRPC status codes, and the wrapper every RPC goes through."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from .._cluster.errors import Contended, EtcdUnreachable
from .._sdk.errors import (
    AlreadyExists,
    DockvolError,
    DriverError,
    InUse,
    InvalidRequest,
    NotFound,
)

log = logging.getLogger("dockvol.csi")

R = TypeVar("R")


class CsiError(Exception):
    """A refusal this front end decides itself (a missing field, an unsupported capability)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> CsiError:
    return CsiError(grpc.StatusCode.INVALID_ARGUMENT, message)


def require(value: str, field: str) -> str:
    """The spec's "MUST be set" fields: missing is INVALID_ARGUMENT."""
    if not value:
        raise invalid(f"{field} is required")
    return value


# Classes, never messages (errors.py of the SDK): the most specific class first.
_CODES: tuple[tuple[type[DockvolError], grpc.StatusCode], ...] = (
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (InUse, grpc.StatusCode.FAILED_PRECONDITION),
    # The cluster's passing conditions (both DriverErrors, so before it): the spec's codes for
    # "retry later" (etcd unreachable from this node) and "another operation on this volume
    # is under way" (a race with another node), which an orchestrator retries, with backoff.
    (EtcdUnreachable, grpc.StatusCode.UNAVAILABLE),
    (Contended, grpc.StatusCode.ABORTED),
    # A driver's message says what failed and what to do; the request itself was valid.
    (DriverError, grpc.StatusCode.INTERNAL),
    # Any other refusal of the service (stored options no longer valid...): state, not request.
    (DockvolError, grpc.StatusCode.FAILED_PRECONDITION),
)


def code_for(exc: DockvolError) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL  # pragma: no cover - DockvolError is the last row


Handler = Callable[[Any, Any, Any], Awaitable[R]]


def rpc(fn: Handler[R]) -> Handler[R]:
    """Run an RPC handler; turn its refusals into gRPC status codes. A bug becomes INTERNAL with
    a generic message: the traceback goes to the log, never onto the wire."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: Any) -> R:
        try:
            reply = await fn(self, request, context)
            log.debug("CSI %s ok", fn.__name__)
            return reply
        except CsiError as exc:
            code, message = exc.code, exc.message
        except DockvolError as exc:
            code, message = code_for(exc), exc.message
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("CSI %s failed", fn.__name__)
            code = grpc.StatusCode.INTERNAL
            message = f"{fn.__name__} failed inside the plugin; details are in the plugin's log"
        log.info("CSI %s refused: %s: %s", fn.__name__, code.name, message)
        await context.abort(code, message)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    return wrapper
