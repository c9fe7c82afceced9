"""TLS for the TCP transport: a small PKI, server contexts, and the engine's ``.json`` spec file.

The engine verifies a plugin's TLS only through a ``.json`` spec with a ``TLSConfig`` (an
``https://`` ``.spec`` file is *not* verified; see docs/protocol.md), so serving TCP always goes with
writing that spec. Mutual TLS: the plugin refuses any client without a certificate signed by its
CA; the engine presents the client certificate named in the spec.

Creating certificates needs the ``cryptography`` package (imported only by :func:`init_pki`);
serving needs only the standard library's :mod:`ssl`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

#: Where the engine looks for plugin spec files (docs/protocol.md).
DEFAULT_SPEC_DIR: Final = Path("/etc/docker/plugins")

# File names inside a ``dockvol tls init`` directory.
CA_CERT: Final = "ca.pem"
CA_KEY: Final = "ca-key.pem"
SERVER_CERT: Final = "server.pem"
SERVER_KEY: Final = "server-key.pem"
CLIENT_CERT: Final = "client.pem"
CLIENT_KEY: Final = "client-key.pem"
ALL_FILES: Final = (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, CLIENT_CERT, CLIENT_KEY)

_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class TLSError(Exception):
    """A TLS or TCP setup problem, with a message that says what to do."""


@dataclass(frozen=True, slots=True)
class CertPaths:
    """A certificate, its private key and the CA that verifies the other side."""

    cert: Path
    key: Path
    ca: Path


# --- Creating a PKI -------------------------------------------------------------------------------


def default_hosts() -> list[str]:
    """Names a server certificate covers when none are given: this host and loopback."""
    hosts = ["localhost", "127.0.0.1", "::1"]
    for name in (socket.gethostname(), socket.getfqdn()):
        if name and name not in hosts:
            hosts.append(name)
    return hosts


def init_pki(
    directory: Path, hosts: Sequence[str] = (), *, days: int = 825, force: bool = False
) -> dict[str, Path]:
    """Create a CA, a server certificate for ``hosts`` and a client certificate for the engine.

    Keys are written 0600 and the directory is 0700. Existing files are kept (a ``TLSError``)
    unless ``force``: replacing a CA silently would lock every engine out.
    Returns the paths by file name.
    """
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:  # pragma: no cover - depends on the installation
        raise TLSError(
            "creating certificates needs the 'cryptography' package: pip install 'dockvol[tls]' "
            "(or bring your own and pass --tls-cert, --tls-key and --tls-ca)"
        ) from None

    if days <= 0:
        raise TLSError("--days must be a positive number of days")
    names = list(dict.fromkeys(hosts or default_hosts()))
    sans: list[x509.GeneralName] = []
    for h in names:
        ip = _as_ip(h)
        if ip is not None:
            sans.append(x509.IPAddress(ip))
        elif _valid_dns_name(h):
            sans.append(x509.DNSName(h))
        else:
            raise TLSError(f"--host {h!r} is neither an IP address nor a DNS name")

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    existing = [f for f in ALL_FILES if (directory / f).exists()]
    if existing and not force:
        raise TLSError(
            f"{directory} already holds {', '.join(existing)}; engines configured with this CA "
            "would be locked out if it were replaced. Use another directory, or --force "
            "to replace it"
        )

    now = datetime.now(UTC) - timedelta(minutes=5)  # tolerate small clock skew
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dockvol CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=max(days, 3650)))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(common_name: str, usage: x509.ObjectIdentifier, alt: list[x509.GeneralName]) -> Any:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if alt:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    server_key, server_cert = leaf(names[0], ExtendedKeyUsageOID.SERVER_AUTH, sans)
    client_key, client_cert = leaf("docker-engine", ExtendedKeyUsageOID.CLIENT_AUTH, [])

    def key_pem(k: Any) -> bytes:
        data: bytes = k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return data

    def cert_pem(c: Any) -> bytes:
        data: bytes = c.public_bytes(serialization.Encoding.PEM)
        return data

    out = {
        CA_KEY: (key_pem(ca_key), 0o600),
        SERVER_KEY: (key_pem(server_key), 0o600),
        CLIENT_KEY: (key_pem(client_key), 0o600),
        CA_CERT: (cert_pem(ca_cert), 0o644),
        SERVER_CERT: (cert_pem(server_cert), 0o644),
        CLIENT_CERT: (cert_pem(client_cert), 0o644),
    }
    paths: dict[str, Path] = {}
    for fname, (data, mode) in out.items():
        paths[fname] = _write_atomic(directory / fname, data, mode)
    return paths


def _as_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def _valid_dns_name(text: str) -> bool:
    if not text or len(text) > 253 or not text.isascii():
        return False
    labels = text.rstrip(".").split(".")
    return all(
        0 < len(label) <= 63
        and not label.startswith("-")
        and not label.endswith("-")
        and all(c.isalnum() or c in "-_*" for c in label)
        for label in labels
    )


def _write_atomic(path: Path, data: bytes, mode: int) -> Path:
    """Write ``data`` to ``path`` atomically, never readable beyond ``mode`` even briefly."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --- Loading certificates -------------------------------------------------------------------------


def resolve_tls_paths(
    tls_dir: Path | None, cert: Path | None = None, key: Path | None = None, ca: Path | None = None
) -> CertPaths:
    """The server's certificate, key and client CA, from ``--tls DIR`` and/or ``--tls-cert...``.

    Explicit files win over the directory's. All three are required: without a CA there is no way
    to verify clients, and an unverified TCP listener is what this project refuses to run.
    """
    given = {"--tls-cert": cert, "--tls-key": key, "--tls-ca": ca}
    if tls_dir is not None:
        cert = cert or tls_dir / SERVER_CERT
        key = key or tls_dir / SERVER_KEY
        ca = ca or tls_dir / CA_CERT
    missing = [
        flag
        for flag, p in {"--tls-cert": cert, "--tls-key": key, "--tls-ca": ca}.items()
        if p is None
    ]
    if missing:
        have = [flag for flag, p in given.items() if p is not None]
        raise TLSError(
            "TLS needs a certificate, its key and a CA to verify clients; missing "
            + ", ".join(missing)
            + (f" (given: {', '.join(have)})" if have else "")
            + ". Pass --tls DIR (made by 'dockvol tls init DIR') or all of --tls-cert, "
            "--tls-key, --tls-ca"
        )
    assert cert is not None and key is not None and ca is not None
    for label, p in (("certificate", cert), ("key", key), ("CA", ca)):
        if not p.is_file():
            hint = " (create one with 'dockvol tls init DIR')" if tls_dir is not None else ""
            raise TLSError(f"TLS {label} {p} does not exist or is not a file{hint}")
    _check_key_private(key)
    return CertPaths(cert=cert, key=key, ca=ca)


def client_paths(tls_dir: Path) -> CertPaths:
    """The engine's client certificate, key and the CA that verifies the plugin."""
    paths = CertPaths(cert=tls_dir / CLIENT_CERT, key=tls_dir / CLIENT_KEY, ca=tls_dir / CA_CERT)
    for p in (paths.cert, paths.key, paths.ca):
        if not p.is_file():
            raise TLSError(f"{p} does not exist: create the PKI with 'dockvol tls init {tls_dir}'")
    return paths


def _check_key_private(key: Path) -> None:
    mode = key.stat().st_mode & 0o777
    if mode & 0o077:
        raise TLSError(
            f"private key {key} is readable by others (mode {mode:04o}); run: chmod 600 {key}"
        )


def server_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """A server context for mutual TLS: TLS 1.2+, a client certificate signed by ``ca`` required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (ssl.SSLError, OSError) as exc:
        raise TLSError(
            f"cannot load TLS certificate {cert} with key {key}: {exc}; check that the key "
            "belongs to the certificate and both are PEM"
        ) from None
    try:
        ctx.load_verify_locations(cafile=str(ca))
    except (ssl.SSLError, OSError) as exc:
        raise TLSError(f"cannot load TLS CA {ca}: {exc}; it must be a PEM certificate") from None
    return ctx


def client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A client context that verifies the plugin with ``ca`` (and presents ``cert`` if given)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key) if key else None)
    return ctx


# --- TCP listener policy --------------------------------------------------------------------------


def parse_hostport(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise TLSError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:9090)")
    host = host.strip("[]") or default_host
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise TLSError(f"{text!r}: the port must be a number from 0 (any free port) to 65535")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    ip = _as_ip(host)
    if ip is not None:
        return ip.is_loopback
    return host.lower() in _LOOPBACK_NAMES


def check_tcp_bind(host: str, tls: bool, allow_plaintext: bool) -> None:
    """Refuse a TCP listener that anyone on the network could drive without credentials.

    With TLS anything goes; without it, only a loopback address and only when explicitly asked
    for (``--allow-plaintext-tcp``): a plugin runs as root and can delete data.
    """
    if tls:
        return
    if not allow_plaintext:
        raise TLSError(
            f"refusing to serve plaintext TCP on {host}: anyone who can connect could create, "
            "mount and delete volumes as root. Use --tls DIR (see 'dockvol tls init'), or, for a "
            "loopback address only, --allow-plaintext-tcp"
        )
    if not is_loopback(host):
        raise TLSError(
            f"refusing to serve plaintext TCP on {host}: --allow-plaintext-tcp is only accepted "
            "for a loopback address (127.0.0.1, ::1, localhost). Use --tls DIR for any other "
            "address"
        )


# --- Spec files -----------------------------------------------------------------------------------


def spec_url(host: str, port: int, tls: bool) -> str:
    h = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{h}:{port}"


def spec_document(name: str, addr: str, client: CertPaths | None) -> dict[str, Any]:
    """The engine's ``NAME.json`` spec: ``Addr`` and, for https, ``TLSConfig`` (absolute paths)."""
    doc: dict[str, Any] = {"Name": name, "Addr": addr}
    if client is not None:
        doc["TLSConfig"] = {
            "InsecureSkipVerify": False,
            "CAFile": str(client.ca.resolve()),
            "CertFile": str(client.cert.resolve()),
            "KeyFile": str(client.key.resolve()),
        }
    return doc


def check_plugin_name(name: str) -> None:
    if not name or "/" in name or name in (".", "..") or "\x00" in name or len(name) > 200:
        raise TLSError(f"plugin name {name!r} cannot be a spec file name; use letters and digits")


def write_spec(spec_dir: Path, name: str, addr: str, client: CertPaths | None) -> Path:
    """Write ``spec_dir/NAME.json`` atomically (0644: it holds paths, never key material)."""
    check_plugin_name(name)
    try:
        spec_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    except OSError as exc:
        raise TLSError(f"cannot create spec directory {spec_dir}: {exc.strerror}") from None
    other = spec_dir / f"{name}.spec"
    if other.exists():
        # The engine reads NAME.spec before NAME.json: ours would be ignored.
        raise TLSError(
            f"{other} exists and the engine would use it instead of {name}.json; remove it"
        )
    data = (json.dumps(spec_document(name, addr, client), indent=2) + "\n").encode()
    try:
        return _write_atomic(spec_dir / f"{name}.json", data, 0o644)
    except OSError as exc:
        raise TLSError(f"cannot write spec file in {spec_dir}: {exc.strerror}") from None


def remove_spec(path: Path | None) -> None:
    """Remove a spec file written by :func:`write_spec` (missing is fine)."""
    if path is not None:
        path.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class TCPPlan:
    """Everything ``serve --tcp`` decided: where to listen, with what TLS, and the spec to write."""

    host: str
    port: int
    context: ssl.SSLContext | None
    client: CertPaths | None  # for the spec file; None when the operator brought their own PKI

    @property
    def addr(self) -> str:
        return self.addr_for(self.port)

    def addr_for(self, port: int) -> str:
        """The spec's ``Addr`` once bound (``--tcp HOST:0`` picks a free port)."""
        return spec_url(self.host, port, self.context is not None)


def plan_tcp(
    tcp: str,
    *,
    tls_dir: Path | None,
    cert: Path | None,
    key: Path | None,
    ca: Path | None,
    allow_plaintext: bool,
) -> TCPPlan:
    """Check and load everything for ``serve --tcp`` before anything listens."""
    host, port = parse_hostport(tcp)
    use_tls = tls_dir is not None or any(p is not None for p in (cert, key, ca))
    check_tcp_bind(host, use_tls, allow_plaintext)
    if not use_tls:
        return TCPPlan(host, port, None, None)
    paths = resolve_tls_paths(tls_dir, cert, key, ca)
    ctx = server_context(paths.cert, paths.key, paths.ca)
    client: CertPaths | None = None
    if tls_dir is not None and (tls_dir / CLIENT_CERT).is_file():
        client = client_paths(tls_dir)
    return TCPPlan(host, port, ctx, client)
