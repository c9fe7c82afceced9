"""Encryption at rest (``-o encrypt=true -o passphrase=secret:NAME``) against the real kernel:
ext4 fscrypt v2 on loop devices (needs root and CONFIG_FS_ENCRYPTION)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dockvol import DriverError, Volume
from dockvol._sdk.options import parse_options
from dockvol._sdk.secrets import SecretStore
from dockvol.drivers.block import BlockDriver, encryption, fscrypt, loop, mounttable
from dockvol.drivers.block.commands import run
from dockvol.drivers.block.filesystems import ext4_encrypted

from .conftest import Holder, wait_for

PASSPHRASE = "correct horse battery staple 7f3a"
OTHER = "not the passphrase 91c2"

Make = Callable[..., Volume]


@pytest.fixture
def secrets_dir(root: Path) -> Path:
    d = root.parent / "secrets"
    d.mkdir(mode=0o700)
    set_secret(d, "vk", PASSPHRASE)
    return d


def set_secret(d: Path, name: str, value: str) -> None:
    path = d / name
    path.write_text(value + "\n")
    path.chmod(0o600)


@pytest.fixture
def make(secrets_dir: Path) -> Make:
    """``make("name", encrypt="true", passphrase="secret:vk")``: a volume whose secrets resolve
    from ``secrets_dir``, as the framework builds it."""
    store = SecretStore(secrets_dir)

    def build(name: str, **opts: str) -> Volume:
        opts.setdefault("size", "32M")
        values = parse_options(BlockDriver.options, opts)
        return Volume(name, f"{name}-0123456789abcdef", values, datetime.now(UTC), opts, store)

    return build


def encrypted(make: Make, name: str, **opts: str) -> Volume:
    return make(name, encrypt="true", passphrase="secret:vk", **opts)


def header(driver: BlockDriver, v: Volume) -> encryption.Header:
    return encryption.read_header(driver.mountpoint(v), v.name)


def test_encrypted_volume_serves_an_encrypted_directory(driver: BlockDriver, make: Make) -> None:
    v = encrypted(make, "enc")
    driver.create(v)
    image = driver.image_path(v)
    assert ext4_encrypted(image)
    assert loop.backing(image) == [] and mounttable.mounted_at(driver.mountpoint(v)) is None
    served = driver.mount(v)
    try:
        fs_root = driver.mountpoint(v)
        assert served == fs_root / "data"
        assert os.listdir(served) == []  # created empty: the engine copies the image's files in
        h = header(driver, v)
        assert fscrypt.policy_identifier(served) == h.identifier
        assert fscrypt.key_status(fs_root, h.identifier) == fscrypt.KEY_STATUS_PRESENT
        assert len(h.salt) == 32
        st = driver.status(v, served)
        assert st["encrypted"] is True and st["attached"] is True
        (served / "sub").mkdir()
        assert fscrypt.policy_identifier(served / "sub") == h.identifier  # inherited
    finally:
        driver.unmount(v)
    assert loop.backing(image) == []
    driver.remove(v)


def _write_marker(driver: BlockDriver, v: Volume, marker: bytes) -> None:
    served = driver.mount(v)
    try:
        (served / marker.decode()).write_bytes(marker * 256)
    finally:
        driver.unmount(v)
    assert loop.backing(driver.image_path(v)) == []  # detached: the image is all there is


def test_image_holds_no_plaintext_but_an_unencrypted_one_does(
    driver: BlockDriver, make: Make
) -> None:
    marker = f"DOCKVOL-MARKER-{secrets.token_hex(8)}".encode()
    plain, enc = make("plain"), encrypted(make, "secret-data")
    for v in (plain, enc):
        driver.create(v)
        _write_marker(driver, v, marker)
    # The scan can fail: the unencrypted image has the contents (and the name) in clear.
    assert marker in driver.image_path(plain).read_bytes()
    raw = driver.image_path(enc).read_bytes()
    assert marker not in raw
    assert marker[:16] not in raw  # nor a fragment of it (file name or contents)
    # The data is there, behind the key.
    served = driver.mount(enc)
    try:
        assert (served / marker.decode()).read_bytes() == marker * 256
    finally:
        driver.unmount(enc)
    for v in (plain, enc):
        driver.remove(v)


def test_passphrase_and_key_are_found_nowhere_on_disk(
    root: Path, driver: BlockDriver, make: Make
) -> None:
    v = encrypted(make, "nowhere")
    driver.create(v)
    _write_marker(driver, v, b"some-data")
    served = driver.mount(v)
    h = header(driver, v)
    driver.unmount(v)
    key = encryption.derive(PASSPHRASE, h)
    needles = [PASSPHRASE.encode(), bytes(key), bytes(key[:16]), bytes(key[32:48])]
    for dirpath, _, files in os.walk(root):
        for f in files:
            data = (Path(dirpath) / f).read_bytes()
            for n in needles:
                assert n not in data, f"{n!r} found in {dirpath}/{f}"
    assert served.parent == driver.mountpoint(v)
    driver.remove(v)


def test_same_passphrase_gives_each_volume_its_own_key(driver: BlockDriver, make: Make) -> None:
    a, b = encrypted(make, "a"), encrypted(make, "b")
    headers = []
    for v in (a, b):
        driver.create(v)
        driver.mount(v)
        try:
            headers.append(header(driver, v))
        finally:
            driver.unmount(v)
    assert headers[0].salt != headers[1].salt
    assert headers[0].identifier != headers[1].identifier
    for v in (a, b):
        driver.remove(v)


def test_wrong_passphrase_is_refused_at_mount_and_leaves_nothing_attached(
    driver: BlockDriver, make: Make, secrets_dir: Path
) -> None:
    v = encrypted(make, "locked")
    driver.create(v)
    _write_marker(driver, v, b"locked-data")
    set_secret(secrets_dir, "vk", OTHER)  # the secret is changed: the passphrase is needed again
    with pytest.raises(DriverError) as err:
        driver.mount(v)
    msg = err.value.message
    assert "wrong passphrase for encrypted volume 'locked'" in msg and "'vk'" in msg
    assert OTHER not in msg and PASSPHRASE not in msg
    assert loop.backing(driver.image_path(v)) == []
    assert mounttable.mounted_at(driver.mountpoint(v)) is None
    set_secret(secrets_dir, "vk", PASSPHRASE)
    served = driver.mount(v)
    try:
        assert (served / "locked-data").read_bytes() == b"locked-data" * 256
    finally:
        driver.unmount(v)
    driver.remove(v)


def test_missing_secret_fails_create_and_mount_cleanly(
    driver: BlockDriver, make: Make, secrets_dir: Path
) -> None:
    v = encrypted(make, "nosecret")
    (secrets_dir / "vk").unlink()
    with pytest.raises(DriverError, match=r"secret 'vk' not found.*DOCKVOL_SECRET_VK"):
        driver.create(v)
    assert not driver.image_path(v).exists() and os.listdir(driver.images) == []
    set_secret(secrets_dir, "vk", PASSPHRASE)
    driver.create(v)
    (secrets_dir / "vk").unlink()
    with pytest.raises(DriverError, match=r"secret 'vk' not found"):
        driver.mount(v)
    assert loop.backing(driver.image_path(v)) == []
    assert mounttable.mounted_at(driver.mountpoint(v)) is None
    driver.remove(v)


def test_key_is_removed_at_detach_even_from_a_copy_of_the_mount(
    driver: BlockDriver, make: Make, namespace_holder: Holder
) -> None:
    """A namespace made while the volume was mounted keeps the filesystem alive after our unmount;
    without the key it sees only encrypted names and cannot read a file."""
    v = encrypted(make, "copied")
    driver.create(v)
    served = driver.mount(v)
    (served / "readable-before").write_text("x")
    holder = namespace_holder()

    def in_copy(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", "-t", str(holder.pid), "-m", *args], capture_output=True, text=True
        )

    assert in_copy("cat", str(served / "readable-before")).stdout == "x"
    driver.unmount(v)
    listing = in_copy("ls", str(served))
    assert listing.returncode == 0 and "readable-before" not in listing.stdout
    [name] = listing.stdout.split()
    assert in_copy("cat", str(served / name)).returncode != 0
    holder.kill()
    holder.wait()
    wait_for("the device to be freed", lambda: not loop.backing(driver.image_path(v)))
    driver.remove(v)


def test_recover_adds_the_key_again_from_the_secret(
    root: Path, driver: BlockDriver, make: Make, secrets_dir: Path
) -> None:
    v = encrypted(make, "restart")
    driver.create(v)
    served = driver.mount(v)
    (served / "f").write_text("before")
    fs_root = driver.mountpoint(v)
    ident = header(driver, v).identifier
    # The plugin dies and the key is lost (as after a reboot, where the mount is made again).
    assert fscrypt.remove_key(fs_root, ident) == 0
    assert fscrypt.key_status(fs_root, ident) == fscrypt.KEY_STATUS_ABSENT
    assert "f" not in os.listdir(served)  # only encrypted names without the key
    after = BlockDriver(root)
    after.setup()
    set_secret(secrets_dir, "vk", OTHER)
    with pytest.raises(DriverError, match="wrong passphrase"):
        after.recover(v, served)
    assert mounttable.mounted_at(fs_root) is not None  # in use: never torn down by a failure
    assert after.status(v, served)["attached"] is True  # and still known
    set_secret(secrets_dir, "vk", PASSPHRASE)
    assert after.recover(v, served) == served
    try:
        assert fscrypt.key_status(fs_root, ident) == fscrypt.KEY_STATUS_PRESENT
        assert (served / "f").read_text() == "before"
    finally:
        after.unmount(v)
    assert loop.backing(after.image_path(v)) == []
    after.remove(v)


def test_owner_and_mode_apply_to_the_served_directory(driver: BlockDriver, make: Make) -> None:
    v = encrypted(make, "owned", uid="1234", gid="2345", mode="0750")
    driver.create(v)
    served = driver.mount(v)
    try:
        st = served.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1234, 2345, 0o750)
        assert (driver.mountpoint(v) / "lost+found").is_dir()  # kept for e2fsck, not served
    finally:
        driver.unmount(v)
    driver.remove(v)


def test_encryption_option_combinations_are_checked_at_create(
    driver: BlockDriver, make: Make
) -> None:
    with pytest.raises(DriverError, match=r"encrypt=true needs -o fs=ext4: xfs"):
        driver.create(make("x", encrypt="true", passphrase="secret:vk", fs="xfs", size="300M"))
    with pytest.raises(DriverError, match=r"encrypt=true needs -o passphrase=secret:NAME"):
        driver.create(make("y", encrypt="true"))
    with pytest.raises(DriverError, match=r"passphrase= is only used with -o encrypt=true"):
        driver.create(make("z", passphrase="secret:vk"))
    with pytest.raises(ValueError, match=r"passphrase=secret:<NAME>"):
        make("inline", encrypt="true", passphrase=PASSPHRASE)
    assert os.listdir(driver.images) == []


def test_adopting_an_image_refuses_a_different_encryption(driver: BlockDriver, make: Make) -> None:
    enc = encrypted(make, "adopt")
    driver.create(enc)
    plain = make("adopt")  # same key, state lost, created again without encryption
    with pytest.raises(DriverError, match=r"is encrypted.*with -o encrypt=true"):
        driver.create(plain)
    driver.create(enc)  # the same options adopt it
    driver.remove(enc)


def test_tools_never_get_secret_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKVOL_SECRET_VK", PASSPHRASE)
    out = run(["env"], what="listing the environment", hint="")
    assert "DOCKVOL_SECRET_" not in out and PASSPHRASE not in out
    assert "LC_ALL=C" in out


def test_key_identifier_matches_the_kernel(driver: BlockDriver, make: Make) -> None:
    """The identifier computed before a key reaches the kernel is the one the kernel derives."""
    v = make("plain-ident", mkfsopts="label=x")
    driver.create(v)
    driver.mount(v)
    fs_root = driver.mountpoint(v)
    key = bytearray(os.urandom(fscrypt.KEY_SIZE))
    expected = fscrypt.key_identifier(key)
    try:
        with pytest.raises(OSError):  # an ext4 made without -O encrypt refuses keys
            fscrypt.add_key(fs_root, bytearray(key))
    finally:
        driver.unmount(v)
    driver.remove(v)
    e = encrypted(make, "enc-ident")
    driver.create(e)
    driver.mount(e)
    try:
        fs_root = driver.mountpoint(e)
        assert fscrypt.add_key(fs_root, bytearray(key)) == expected
        assert fscrypt.remove_key(fs_root, expected) == 0
    finally:
        driver.unmount(e)
    driver.remove(e)


def test_a_create_interrupted_while_mounted_is_released_at_start(
    root: Path, driver: BlockDriver, make: Make
) -> None:
    """A crash while create had the new filesystem mounted (to make its encrypted directory)."""
    v = encrypted(make, "interrupted")
    driver.create(v)
    tmp = driver.image_path(v).with_name(driver.image_path(v).name + ".new")
    driver.image_path(v).rename(tmp)
    device = loop.attach(tmp)
    mp = driver.mountpoint(v)
    subprocess.run(["mount", "-t", "ext4", device, str(mp)], check=True)
    after = BlockDriver(root)
    after.setup()
    assert loop.backing(tmp) == [] and mounttable.mounted_at(mp) is None
    assert after.recover(v, None) is None  # the record without an image: created again
    assert after.audit([v]) == [] and not tmp.exists()
    served = after.mount(v)
    try:
        assert os.listdir(served) == []
    finally:
        after.unmount(v)
    after.remove(v)


def test_ioctl_numbers_and_layouts_are_those_of_linux_fscrypt_h() -> None:
    # Values of the macros and sizeof() in /usr/include/linux/fscrypt.h (Linux 6.x, x86-64).
    assert fscrypt.FS_IOC_SET_ENCRYPTION_POLICY == 0x800C6613
    assert fscrypt.FS_IOC_GET_ENCRYPTION_POLICY_EX == 0xC0096616
    assert fscrypt.FS_IOC_ADD_ENCRYPTION_KEY == 0xC0506617
    assert fscrypt.FS_IOC_REMOVE_ENCRYPTION_KEY == 0xC0406618
    assert fscrypt.FS_IOC_GET_ENCRYPTION_KEY_STATUS == 0xC080661A
    assert fscrypt._POLICY_V2.size == 24 and fscrypt._KEY_SPEC.size == 40


@pytest.mark.parametrize(
    "change",
    [{"n": 1 << 30}, {"n": 1000}, {"r": 0}, {"p": 64}, {"salt": "00"}, {"kdf": "md5"}],
)
def test_a_tampered_header_is_refused(change: dict[str, object]) -> None:
    good = encryption.Header(os.urandom(32), 1 << 15, 8, 1, os.urandom(16))
    assert encryption.Header.from_json(good.to_json()) == good
    bad = json.dumps({**json.loads(good.to_json()), **change})
    with pytest.raises(ValueError):
        encryption.Header.from_json(bad)


def test_resize_needs_no_passphrase_and_keeps_the_data(
    driver: BlockDriver, make: Make, secrets_dir: Path
) -> None:
    v = encrypted(make, "grow")
    driver.create(v)
    _write_marker(driver, v, b"kept")
    (secrets_dir / "vk").unlink()  # growing never needs the key
    driver.resize(v, 64 << 20, None)
    set_secret(secrets_dir, "vk", PASSPHRASE)
    served = driver.mount(v)
    try:
        assert os.statvfs(served).f_blocks * os.statvfs(served).f_frsize > 48 << 20
        assert (served / "kept").read_bytes() == b"kept" * 256
    finally:
        driver.unmount(v)
    driver.remove(v)
