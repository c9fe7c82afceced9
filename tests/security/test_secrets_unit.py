"""Secrets by reference and option hardening, without a running plugin."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from dockvol import DriverError, Option, SecretRef
from dockvol._sdk.options import MAX_OPTIONS, MAX_VALUE_BYTES, parse_options, redact
from dockvol._sdk.secrets import MAX_SECRET_BYTES, SecretStore

SCHEMA = {"passphrase": Option.secret_ref(), "label": Option.string(), "size": Option.size()}
SECRET = "hunter2-correct-horse"


def test_inline_secret_is_refused_without_echo_and_explains_reference_form() -> None:
    with pytest.raises(ValueError) as err:
        parse_options(SCHEMA, {"passphrase": SECRET})
    msg = str(err.value)
    assert SECRET not in msg
    assert "secret:<NAME>" in msg and "DOCKVOL_SECRET_" in msg


def test_mistyped_reference_is_not_echoed() -> None:
    with pytest.raises(ValueError) as err:
        parse_options(SCHEMA, {"passphrase": "secret:" + SECRET + " !"})
    assert SECRET not in str(err.value)


@pytest.mark.parametrize("bad", ["a\x00b", "a\nb", "a\rb", "x\x1b[2J", "\x7f", "a\u0085b"])
def test_control_characters_in_values_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        parse_options(SCHEMA, {"label": bad})


def test_control_characters_in_secret_values_are_refused_without_echo() -> None:
    with pytest.raises(ValueError) as err:
        parse_options(SCHEMA, {"passphrase": SECRET + "\n"})
    assert SECRET not in str(err.value)


@pytest.mark.parametrize("key", ["", "a\x00", "k\n", "x" * 200])
def test_bad_option_names_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="option name"):
        parse_options(SCHEMA, {key: "1"})


def test_huge_values_and_too_many_options_are_refused() -> None:
    with pytest.raises(ValueError, match="longer than"):
        parse_options(SCHEMA, {"label": "x" * (MAX_VALUE_BYTES + 1)})
    with pytest.raises(ValueError, match="too many options"):
        parse_options(SCHEMA, {f"k{i}": "v" for i in range(MAX_OPTIONS + 1)})


def test_unicode_lookalike_option_name_is_unknown_not_aliased() -> None:
    # A Cyrillic a (U+0430) in the key: must not be taken for the secret option.
    with pytest.raises(ValueError, match="unknown option") as err:
        parse_options(SCHEMA, {"p\u0430ssphrase": "secret:k"})
    assert "valid options" in str(err.value)


def test_redact_never_shows_inline_secret() -> None:
    assert redact(SCHEMA, {"passphrase": SECRET, "label": "x"}) == {
        "passphrase": "<redacted>",
        "label": "x",
    }


def test_store_reads_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "k1").write_text(SECRET + "\n")
    (tmp_path / "k1").chmod(0o600)
    store = SecretStore(tmp_path)
    assert store.resolve(SecretRef("k1")) == SECRET
    monkeypatch.setenv("DOCKVOL_SECRET_MY_KEY_2", "from-env")
    assert store.resolve(SecretRef("my-key.2")) == "from-env"
    monkeypatch.setenv("DOCKVOL_SECRET_EMPTY", "")
    with pytest.raises(DriverError, match="not found"):
        store.resolve(SecretRef("empty"))


def test_store_rotation_is_seen_at_next_resolve(tmp_path: Path) -> None:
    f = tmp_path / "k"
    f.write_text("one")
    store = SecretStore(tmp_path)
    assert store.resolve(SecretRef("k")) == "one"
    f.write_text("two")
    assert store.resolve(SecretRef("k")) == "two"


def test_store_errors_name_the_file_never_the_value(tmp_path: Path) -> None:
    store = SecretStore(tmp_path)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(DriverError, match="is empty"):
        store.resolve(SecretRef("empty"))
    (tmp_path / "big").write_bytes(b"x" * (MAX_SECRET_BYTES + 1))
    with pytest.raises(DriverError, match="larger than"):
        store.resolve(SecretRef("big"))
    (tmp_path / "bin").write_bytes(SECRET.encode() + b"\xff")
    with pytest.raises(DriverError, match="not UTF-8") as err:
        store.resolve(SecretRef("bin"))
    assert SECRET not in str(err.value)
    (tmp_path / "dir").mkdir()
    with pytest.raises(DriverError, match="not a regular file"):
        store.resolve(SecretRef("dir"))
    os.mkfifo(tmp_path / "fifo")  # would block a plain read() forever
    with pytest.raises(DriverError, match="not a regular file"):
        store.resolve(SecretRef("fifo"))


def test_store_warns_once_about_readable_secret_file_without_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = tmp_path / "k"
    f.write_text(SECRET)
    f.chmod(0o644)
    store = SecretStore(tmp_path)
    with caplog.at_level(logging.WARNING, logger="dockvol.secrets"):
        store.resolve(SecretRef("k"))
        store.resolve(SecretRef("k"))
    warnings = [r for r in caplog.records if "chmod 600" in r.getMessage()]
    assert len(warnings) == 1
    assert SECRET not in caplog.text


def test_scrubbed_environ_drops_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from dockvol._sdk.secrets import scrubbed_environ

    monkeypatch.setenv("DOCKVOL_SECRET_K", SECRET)
    monkeypatch.setenv("DOCKVOL_ROOT", "/x")
    env = scrubbed_environ()
    assert "DOCKVOL_SECRET_K" not in env and SECRET not in env.values()
    assert env["DOCKVOL_ROOT"] == "/x"
