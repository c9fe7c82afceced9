"""TLS building blocks without an engine: the PKI, mutual-TLS contexts, bind policy, spec files."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from pathlib import Path

import pytest

from dockvol._cli.main import main as cli_main
from dockvol._transport import tls


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki") / "tls"
    tls.init_pki(d, ["localhost", "127.0.0.1", "::1"])
    return d


def _serve_once(ctx: ssl.SSLContext) -> tuple[int, threading.Thread, list[object]]:
    """A one-connection TLS echo server; the result list gets b"ok" or the server-side error."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    result: list[object] = []

    def run() -> None:
        conn, _ = lsock.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as s:
                result.append(s.recv(16))
                s.sendall(b"pong")
        except (ssl.SSLError, OSError) as exc:
            result.append(exc)
        finally:
            lsock.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return lsock.getsockname()[1], t, result


def test_pki_files_and_key_permissions(pki: Path) -> None:
    for name in tls.ALL_FILES:
        assert (pki / name).is_file()
    for key in (tls.CA_KEY, tls.SERVER_KEY, tls.CLIENT_KEY):
        assert (pki / key).stat().st_mode & 0o777 == 0o600
    assert pki.stat().st_mode & 0o777 == 0o700


def test_init_refuses_to_replace_existing_pki(pki: Path) -> None:
    before = (pki / tls.CA_CERT).read_bytes()
    with pytest.raises(tls.TLSError, match="--force"):
        tls.init_pki(pki, ["localhost"])
    assert (pki / tls.CA_CERT).read_bytes() == before


def test_init_rejects_bad_host(tmp_path: Path) -> None:
    with pytest.raises(tls.TLSError, match="neither an IP"):
        tls.init_pki(tmp_path / "x", ["bad host/name"])


def test_mutual_tls_handshake_with_client_certificate(pki: Path) -> None:
    server = tls.server_context(pki / tls.SERVER_CERT, pki / tls.SERVER_KEY, pki / tls.CA_CERT)
    port, t, result = _serve_once(server)
    client = tls.client_context(pki / tls.CA_CERT, pki / tls.CLIENT_CERT, pki / tls.CLIENT_KEY)
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        client.wrap_socket(raw, server_hostname="127.0.0.1") as s,
    ):
        s.sendall(b"ping")
        assert s.recv(16) == b"pong"
    t.join(10)
    assert result == [b"ping"]


def test_server_refuses_client_without_certificate(pki: Path) -> None:
    server = tls.server_context(pki / tls.SERVER_CERT, pki / tls.SERVER_KEY, pki / tls.CA_CERT)
    port, t, result = _serve_once(server)
    client = tls.client_context(pki / tls.CA_CERT)  # verifies the server, presents nothing
    with (
        pytest.raises((ssl.SSLError, OSError)),
        socket.create_connection(("127.0.0.1", port)) as raw,
        client.wrap_socket(raw, server_hostname="localhost") as s,
    ):
        # TLS 1.3: the refusal arrives with the first read after the handshake.
        s.sendall(b"ping")
        s.recv(16)
    t.join(10)
    assert len(result) == 1 and isinstance(result[0], ssl.SSLError)


def test_server_refuses_certificate_from_another_ca(pki: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    tls.init_pki(other, ["localhost"])
    server = tls.server_context(pki / tls.SERVER_CERT, pki / tls.SERVER_KEY, pki / tls.CA_CERT)
    port, t, result = _serve_once(server)
    client = tls.client_context(pki / tls.CA_CERT, other / tls.CLIENT_CERT, other / tls.CLIENT_KEY)
    with (
        pytest.raises((ssl.SSLError, OSError)),
        socket.create_connection(("127.0.0.1", port)) as raw,
        client.wrap_socket(raw, server_hostname="localhost") as s,
    ):
        s.sendall(b"ping")
        s.recv(16)
    t.join(10)
    assert isinstance(result[0], ssl.SSLError)


def test_server_certificate_names_are_verified(pki: Path) -> None:
    server = tls.server_context(pki / tls.SERVER_CERT, pki / tls.SERVER_KEY, pki / tls.CA_CERT)
    port, t, _ = _serve_once(server)
    client = tls.client_context(pki / tls.CA_CERT, pki / tls.CLIENT_CERT, pki / tls.CLIENT_KEY)
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection(("127.0.0.1", port)) as raw,
    ):
        client.wrap_socket(raw, server_hostname="not-a-name-we-issued.example")
    t.join(10)


def test_resolve_paths_requires_all_three(tmp_path: Path, pki: Path) -> None:
    with pytest.raises(tls.TLSError, match="--tls-ca"):
        tls.resolve_tls_paths(None, pki / tls.SERVER_CERT, pki / tls.SERVER_KEY, None)
    with pytest.raises(tls.TLSError, match="tls init"):
        tls.resolve_tls_paths(tmp_path / "missing")
    paths = tls.resolve_tls_paths(pki)
    assert paths == tls.CertPaths(pki / tls.SERVER_CERT, pki / tls.SERVER_KEY, pki / tls.CA_CERT)


def test_world_readable_key_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    tls.init_pki(d, ["localhost"])
    (d / tls.SERVER_KEY).chmod(0o644)
    with pytest.raises(tls.TLSError, match="chmod 600"):
        tls.resolve_tls_paths(d)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.1.2.3"])
def test_plaintext_tcp_allowed_only_on_loopback_when_asked(host: str) -> None:
    tls.check_tcp_bind(host, tls=False, allow_plaintext=True)
    with pytest.raises(tls.TLSError, match="--allow-plaintext-tcp"):
        tls.check_tcp_bind(host, tls=False, allow_plaintext=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "example.com", "192.168.0.1"])
def test_plaintext_tcp_refused_off_loopback_even_when_asked(host: str) -> None:
    with pytest.raises(tls.TLSError, match="only accepted for a loopback"):
        tls.check_tcp_bind(host, tls=False, allow_plaintext=True)
    tls.check_tcp_bind(host, tls=True, allow_plaintext=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:9000", ("127.0.0.1", 9000)), ("[::1]:80", ("::1", 80)), (":7", ("127.0.0.1", 7))],
)
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert tls.parse_hostport(text) == expected


@pytest.mark.parametrize("text", ["nohost", "h:-1", "h:65536", "h:x"])
def test_parse_hostport_rejects(text: str) -> None:
    with pytest.raises(tls.TLSError):
        tls.parse_hostport(text)


def test_write_and_remove_spec(tmp_path: Path, pki: Path) -> None:
    specs = tmp_path / "specs"
    path = tls.write_spec(specs, "dv", "https://127.0.0.1:9443", tls.client_paths(pki))
    assert path == specs / "dv.json"
    doc = json.loads(path.read_text())
    assert doc["Name"] == "dv" and doc["Addr"] == "https://127.0.0.1:9443"
    assert doc["TLSConfig"]["CAFile"] == str((pki / tls.CA_CERT).resolve())
    assert doc["TLSConfig"]["CertFile"] == str((pki / tls.CLIENT_CERT).resolve())
    assert doc["TLSConfig"]["KeyFile"] == str((pki / tls.CLIENT_KEY).resolve())
    assert "BEGIN" not in path.read_text()  # paths only, never key material
    assert path.stat().st_mode & 0o777 == 0o644
    tls.remove_spec(path)
    assert not path.exists()
    tls.remove_spec(path)  # already gone: fine


def test_write_spec_refuses_shadowing_dot_spec_and_bad_names(tmp_path: Path) -> None:
    (tmp_path / "dv.spec").write_text("unix:///x.sock\n")
    with pytest.raises(tls.TLSError, match=r"dv\.spec"):
        tls.write_spec(tmp_path, "dv", "https://h:1", None)
    for bad in ("../evil", "a/b", "", ".."):
        with pytest.raises(tls.TLSError):
            tls.write_spec(tmp_path, bad, "https://h:1", None)


def test_plan_tcp(pki: Path) -> None:
    plan = tls.plan_tcp(
        "127.0.0.1:9443", tls_dir=pki, cert=None, key=None, ca=None, allow_plaintext=False
    )
    assert plan.context is not None and plan.context.verify_mode == ssl.CERT_REQUIRED
    assert plan.addr == "https://127.0.0.1:9443"
    assert plan.client == tls.client_paths(pki)
    with pytest.raises(tls.TLSError, match="plaintext"):
        tls.plan_tcp("0.0.0.0:80", tls_dir=None, cert=None, key=None, ca=None, allow_plaintext=True)


def test_cli_init_and_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "pki"
    with pytest.raises(SystemExit) as exc:
        cli_main(["tls", "init", str(d), "--host", "127.0.0.1", "--host", "plugin.example"])
    assert exc.value.code == 0
    assert (d / tls.CLIENT_KEY).stat().st_mode & 0o777 == 0o600
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli_main(
            [
                "tls",
                "spec",
                "--name",
                "dv",
                "--addr",
                "plugin.example:9443",
                "--tls",
                str(d),
                "--cert-dir",
                "/etc/dockvol/dv",
            ]
        )
    assert exc.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == {
        "Name": "dv",
        "Addr": "https://plugin.example:9443",
        "TLSConfig": {
            "InsecureSkipVerify": False,
            "CAFile": "/etc/dockvol/dv/ca.pem",
            "CertFile": "/etc/dockvol/dv/client.pem",
            "KeyFile": "/etc/dockvol/dv/client-key.pem",
        },
    }
    with pytest.raises(SystemExit) as exc:
        cli_main(["tls", "init", str(d)])
    assert exc.value.code == 1
    assert "--force" in capsys.readouterr().err


def test_own_pki_serves_tls_but_writes_no_spec(
    pki: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With --tls-cert/--tls-key/--tls-ca the engine's client files are unknown: no spec, a hint."""
    import asyncio

    from dockvol._transport.tcp import serve_tcp

    plan = tls.plan_tcp(
        "127.0.0.1:0",
        tls_dir=None,
        cert=pki / tls.SERVER_CERT,
        key=pki / tls.SERVER_KEY,
        ca=pki / tls.CA_CERT,
        allow_plaintext=False,
    )
    assert plan.client is None and plan.context is not None

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        pass

    async def scenario() -> str:
        async with serve_tcp(plan, app, name="own", spec_dir=tmp_path / "specs") as addr:
            assert not (tmp_path / "specs" / "own.json").exists()
            return addr

    with caplog.at_level("WARNING", logger="dockvol.tcp"):
        addr = asyncio.run(scenario())
    assert addr.startswith("https://127.0.0.1:")
    assert "dockvol tls spec --name own" in caplog.text
