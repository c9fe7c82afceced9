"""Volume names are arbitrary strings; their on-disk keys are always one safe path component."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockvol._service.names import check_name, volume_key

KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*-[0-9a-f]{16}$")


@pytest.mark.parametrize(
    "name", ["data", "../../etc", "a/b", "with space", "ünïcødé", ".", "..", "-x"]
)
def test_odd_but_printable_names_are_accepted(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [("", "empty"), ("a\nb", "control"), ("nul\0", "control"), ("x" * 256, "longer than 255")],
)
def test_unusable_names_are_refused_with_a_reason(name: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_name(name)


@given(st.text(min_size=1, max_size=200))
def test_every_key_is_one_safe_component(name: str) -> None:
    key = volume_key(name)
    assert KEY_RE.match(key), key
    assert "/" not in key and key not in (".", "..")


def test_names_that_sanitise_alike_get_distinct_keys() -> None:
    assert volume_key("a b") != volume_key("a_b")
    assert volume_key("x/y") != volume_key("x_y")


def test_keys_are_stable_and_readable() -> None:
    assert volume_key("pgdata") == volume_key("pgdata")
    assert volume_key("pgdata").startswith("pgdata-")
