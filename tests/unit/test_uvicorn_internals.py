"""The request guard (src/dockvol/_transport/guard.py) subclasses uvicorn's HTTP protocol
classes and uses some of their internals. pyproject.toml pins uvicorn below the next minor
release; this test fails loudly, naming what moved, when a new uvicorn changes any of them."""

from __future__ import annotations

import inspect

import pytest

# What the guard calls or overrides, and the attributes it reads, per protocol class.
METHODS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_response_complete",
    "send_400_response",
)
USED: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "h11": (
        "uvicorn.protocols.http.h11_impl:H11Protocol",
        METHODS,
        ("self.loop", "self.transport", "self.connections", "self.conn", "self.cycle"),
    ),
    "httptools": (
        "uvicorn.protocols.http.httptools_impl:HttpToolsProtocol",
        (*METHODS, "on_message_begin", "on_headers_complete", "on_message_complete"),
        (
            "self.loop",
            "self.transport",
            "self.connections",
            "self.url",
            "self.headers",
            "self.pipeline",
        ),
    ),
}


@pytest.mark.parametrize("kind", sorted(USED))
def test_the_uvicorn_internals_the_guard_uses_are_still_there(kind: str) -> None:
    import importlib

    where, methods, attributes = USED[kind]
    module_name, _, class_name = where.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    assert cls is not None, f"uvicorn no longer has {where}: update _transport/guard.py"
    missing = [m for m in methods if not callable(getattr(cls, m, None))]
    source = inspect.getsource(cls)
    missing += [a for a in attributes if a not in source]
    assert not missing, (
        f"uvicorn {importlib.import_module('uvicorn').__version__} changed {where}: "
        f"{', '.join(missing)} gone; update src/dockvol/_transport/guard.py and the pin in "
        "pyproject.toml"
    )


def test_the_guard_builds_on_the_installed_uvicorn() -> None:
    from dockvol._transport import guard

    for kind in ("h11", "httptools"):
        assert issubclass(guard.protocol_class(kind), guard._Guard)
