"""Option schemas: parsing, defaults, unknown keys, secrets."""

from __future__ import annotations

import pytest

from dockvol import REQUIRED, Option, SecretRef
from dockvol._sdk.options import parse_mode, parse_options, parse_size, redact

SCHEMA = {
    "size": Option.size(default=REQUIRED),
    "fs": Option.choice("ext4", "xfs", default="ext4"),
    "mode": Option.mode(),
    "uid": Option.id(),
    "encrypt": Option.boolean(),
    "passphrase": Option.secret_ref(),
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512M", 512 << 20),
        ("10G", 10 << 30),
        ("1048576", 1 << 20),
        ("2gib", 2 << 30),
        ("4 KB", 4096),
    ],
)
def test_sizes_use_binary_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "ten", "-5G", "0", "1.5G", "5X"])
def test_bad_sizes_are_refused_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match=r"size|zero"):
        parse_size(text)


def test_modes_are_octal() -> None:
    assert parse_mode("0755") == 0o755
    assert parse_mode("750") == 0o750
    assert parse_mode("0o700") == 0o700
    with pytest.raises(ValueError, match="octal"):
        parse_mode("999")


def test_defaults_are_filled_and_values_parsed() -> None:
    values = parse_options(SCHEMA, {"size": "1G", "mode": "0700", "encrypt": "true"})
    assert values == {
        "size": 1 << 30,
        "fs": "ext4",
        "mode": 0o700,
        "uid": None,
        "encrypt": True,
        "passphrase": None,
    }


def test_unknown_keys_are_refused_listing_the_valid_ones() -> None:
    with pytest.raises(ValueError) as err:
        parse_options(SCHEMA, {"size": "1G", "colour": "blue"})
    msg = str(err.value)
    assert "'colour'" in msg
    for key in SCHEMA:
        assert key in msg


def test_required_options_say_how_to_give_them() -> None:
    with pytest.raises(ValueError, match=r"-o size="):
        parse_options(SCHEMA, {})


def test_choices_are_listed_when_a_value_is_not_one() -> None:
    with pytest.raises(ValueError, match="ext4, xfs"):
        parse_options(SCHEMA, {"size": "1G", "fs": "btrfs"})


def test_secret_options_take_references_only_and_never_echo_the_value() -> None:
    values = parse_options(SCHEMA, {"size": "1G", "passphrase": "secret:vault-key"})
    assert values["passphrase"] == SecretRef("vault-key")
    with pytest.raises(ValueError) as err:
        parse_options(SCHEMA, {"size": "1G", "passphrase": "hunter2"})
    assert "hunter2" not in str(err.value)
    assert "secret:" in str(err.value)


def test_redact_hides_inline_secret_values_but_shows_references() -> None:
    shown = redact(SCHEMA, {"passphrase": "hunter2", "size": "1G"})
    assert shown == {"passphrase": "<redacted>", "size": "1G"}
    assert redact(SCHEMA, {"passphrase": "secret:k"}) == {"passphrase": "secret:k"}


@pytest.mark.parametrize("mode", ["4777", "2755", "6700", "04755"])
def test_set_id_bits_are_refused_on_a_volume_directory(mode: str) -> None:
    with pytest.raises(ValueError, match="setuid or setgid"):
        parse_mode(mode)


def test_the_sticky_bit_is_allowed() -> None:
    assert parse_mode("1777") == 0o1777
