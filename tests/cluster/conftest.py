"""Fixtures for cluster tests: one real 3-member etcd cluster on loopback for the session.

Tests isolate themselves with a fresh key prefix each (``prefix`` fixture), so they share the
cluster without seeing each other's volumes. A test that kills a member restarts it before it
ends.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from .etcd import EtcdCluster

T = TypeVar("T")


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdCluster]:
    c = EtcdCluster.start(3)  # raises (the test fails) if etcd cannot start: never skip
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def prefix() -> str:
    return "/t" + uuid.uuid4().hex[:10]


def wait_for(cond: Callable[[], T], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll ``cond`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)  # polling a condition with a deadline
