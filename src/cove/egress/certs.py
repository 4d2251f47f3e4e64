"""The egress proxy's certificate authority, for the HTTPS it intercepts (only towards hosts a
routing rule must see inside; everything else is tunnelled untouched).

One platform CA, generated once into `<data dir>/egress/` (key 0600 in a 0700 directory: it
never enters a sandbox). Sandboxes trust it through a bundle (the host's system CAs + this CA)
written to the directory the runtime shares read-only with every sandbox, so no sandbox holds a
copy. Leaf certificates are issued on demand with `cryptography`, one per host name, all on one
in-memory key, and cached as ready server-side SSLContexts.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import ipaddress
import logging
import os
import secrets
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger("cove.egress")
CA_DAYS = 3650
LEAF_DAYS = 30  # re-issued after half of it
CONTEXTS = 512  # cached leaf contexts (one per intercepted host name)
ALPN = ["http/1.1"]  # the proxy speaks HTTP/1.1 on both sides of an interception
_PEM = serialization.Encoding.PEM
_PKCS8 = serialization.PrivateFormat.PKCS8
_PLAIN = serialization.NoEncryption()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Atomically, created with `mode` from the start (never briefly world-readable)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)  # whatever the umask
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _new_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cove"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"cove egress CA {secrets.token_hex(4)}"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    usage = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(days=1))
        .not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def load_or_create_ca(ca_dir: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    ca_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(ca_dir, 0o700)
    key_path, cert_path = ca_dir / "ca-key.pem", ca_dir / "ca.pem"
    if key_path.exists() and cert_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if isinstance(key, ec.EllipticCurvePrivateKey) and cert.not_valid_after_utc > _now():
            return key, cert
        log.warning("egress CA in %s is unusable or expired: making a new one", ca_dir)
    key, cert = _new_ca()
    _write_private(key_path, key.private_bytes(_PEM, _PKCS8, _PLAIN), 0o600)
    _write_private(cert_path, cert.public_bytes(_PEM), 0o644)
    return key, cert


def system_bundle() -> bytes:
    """The host's CA bundle (what the host trusts for its own outgoing TLS), or nothing."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and os.path.isfile(candidate):
            with open(candidate, "rb") as f:
                return f.read()
    log.warning("no system CA bundle found: sandboxes will trust cove's egress CA only")
    return b""


class Authority:
    def __init__(self, ca_dir: Path, test_ca: Path | None = None) -> None:
        self._ca_dir = ca_dir
        self._ca_key, self._ca_cert = load_or_create_ca(ca_dir)
        self.ca_pem = self._ca_cert.public_bytes(_PEM)
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())
        self._contexts: collections.OrderedDict[str, tuple[datetime.datetime, ssl.SSLContext]]
        self._contexts = collections.OrderedDict()
        self.upstream = self._upstream_context(test_ca)

    @staticmethod
    def _upstream_context(test_ca: Path | None) -> ssl.SSLContext:
        """Verifies upstreams against the host's system CAs (plus, for tests only, one more)."""
        ctx = ssl.create_default_context()
        if test_ca is not None:
            ctx.load_verify_locations(cafile=str(test_ca))
        ctx.set_alpn_protocols(ALPN)
        return ctx

    def write_trust(self, shared_dir: Path) -> tuple[str, str]:
        """Write the CA and the bundle (system CAs + CA) for sandboxes; their file names."""
        shared_dir.mkdir(parents=True, exist_ok=True)
        ca_name, bundle_name = "egress-ca.pem", "egress-ca-bundle.pem"
        _write_private(shared_dir / ca_name, self.ca_pem, 0o644)
        bundle = system_bundle().rstrip(b"\n") + b"\n" + self.ca_pem
        _write_private(shared_dir / bundle_name, bundle, 0o644)
        return ca_name, bundle_name

    def server_context(self, host: str) -> ssl.SSLContext:
        """The server-side context that shows the sandbox a certificate for `host`."""
        cached = self._contexts.get(host)
        if cached is not None and cached[0] > _now():
            self._contexts.move_to_end(host)
            return cached[1]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(ALPN)
        chain = self._leaf(host).public_bytes(_PEM) + self.ca_pem
        key = self._leaf_key.private_bytes(_PEM, _PKCS8, _PLAIN)
        # load_cert_chain reads files only: a private temporary one, gone right after
        with tempfile.NamedTemporaryFile(dir=self._ca_dir, suffix=".pem") as f:
            f.write(chain + key)
            f.flush()
            ctx.load_cert_chain(f.name)
        self._contexts[host] = (_now() + datetime.timedelta(days=LEAF_DAYS / 2), ctx)
        while len(self._contexts) > CONTEXTS:
            self._contexts.popitem(last=False)
        return ctx

    def _leaf(self, host: str) -> x509.Certificate:
        try:
            alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            alt = x509.DNSName(host)
        subject = [x509.NameAttribute(NameOID.COMMON_NAME, host)] if len(host) <= 64 else []
        ca_ski = self._ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
        public = self._leaf_key.public_key()
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(self._ca_cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(hours=1))
            .not_valid_after(min(_now() + datetime.timedelta(days=LEAF_DAYS), self._ca_end()))
            .add_extension(x509.SubjectAlternativeName([alt]), critical=not subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski.value),
                critical=False,
            )
            .sign(self._ca_key, hashes.SHA256())
        )

    def _ca_end(self) -> datetime.datetime:
        return self._ca_cert.not_valid_after_utc
