"""The lab's image registry: Debian's `docker-registry` (the CNCF distribution registry) on the
portal's address on the lab bridge, over TLS with a certificate from a CA the lab makes once,
and htpasswd (bcrypt) sign-in with a generated user. It stands for a company's registry, so the
portal reaches it as it would a real one: by URL, credentials and CA (issue 23).

Everything it keeps is under the lab's state dir (`registry/`, 0700): the CA and server keys,
the credentials (0600), the config and the blobs. It runs in this machine's network namespace
(the bridge's address is there), is found only by the pidfile written here, and `up` replaces a
registry whose config or certificate changed.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.conf import settings

from apps.lab import netns
from apps.lab.fleet import LabConfig, Log, _low
from apps.lab.netns import LabError

BINARY = "/usr/bin/docker-registry"
USER = "slipway-lab"
YEARS = 10


@dataclass(frozen=True)
class LabRegistry:
    config: LabConfig
    port: int

    @classmethod
    def of(cls, config: LabConfig) -> LabRegistry:
        return cls(config, settings.LAB_REGISTRY_PORT)

    @property
    def dir(self) -> Path:
        return self.config.state_dir / "registry"

    @property
    def hostport(self) -> str:
        return f"{self.config.portal_ip}:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.hostport}"

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def cert(self) -> Path:
        return self.dir / "server.crt"

    @property
    def key(self) -> Path:
        return self.dir / "server.key"

    @property
    def credentials_file(self) -> Path:
        return self.dir / "credentials.json"

    @property
    def htpasswd(self) -> Path:
        return self.dir / "htpasswd"

    @property
    def config_file(self) -> Path:
        return self.dir / "config.yml"

    @property
    def storage(self) -> Path:
        return self.dir / "storage"

    @property
    def log_file(self) -> Path:
        return self.dir / "registry.log"

    @property
    def pidfile(self) -> Path:
        return self.config.run_dir / "registry.pid"

    def ca_pem(self) -> str:
        return self.ca_cert.read_text()

    def credentials(self) -> tuple[str, str]:
        document = json.loads(self.credentials_file.read_text())
        return str(document["username"]), str(document["password"])


# --- keys, certificates and credentials, made once ---------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    path.chmod(0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _ensure_ca(registry: LabRegistry) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if registry.ca_cert.exists() and registry.ca_key.exists():
        cert = x509.load_pem_x509_certificate(registry.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(registry.ca_key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Slipway lab CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365 * YEARS))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(registry.ca_key, _key_pem(key))
    registry.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    registry.cert.unlink(missing_ok=True)  # signed by a CA that is gone
    return cert, key


def _server_cert_fits(registry: LabRegistry, ca: x509.Certificate) -> bool:
    if not (registry.cert.exists() and registry.key.exists()):
        return False
    cert = x509.load_pem_x509_certificate(registry.cert.read_bytes())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return (
        cert.issuer == ca.subject
        and registry.config.portal_ip in names.get_values_for_type(x509.IPAddress)
        and cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)
    )


def _ensure_server_cert(registry: LabRegistry) -> bool:
    """The registry's certificate for the bridge's address, signed by the lab CA; True if made now."""
    ca, ca_key = _ensure_ca(registry)
    if _server_cert_fits(registry, ca):
        return False
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, registry.hostport)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365 * YEARS))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(registry.config.portal_ip))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(registry.key, _key_pem(key))
    registry.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return True


def _ensure_credentials(registry: LabRegistry) -> bool:
    """A generated user and password (kept 0600) and their bcrypt line; True if made now."""
    import bcrypt  # paramiko's dependency; only the lab hashes passwords for a registry

    if registry.credentials_file.exists() and registry.htpasswd.exists():
        return False
    password = secrets.token_urlsafe(18)
    _write_private(registry.credentials_file, json.dumps({"username": USER, "password": password}).encode())
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    _write_private(registry.htpasswd, f"{USER}:{hashed}\n".encode())
    return True


def _config_text(registry: LabRegistry) -> str:
    # JSON is YAML: no YAML library needed to write the registry's config.
    http_secret = registry.dir / "http-secret"
    if not http_secret.exists():
        _write_private(http_secret, secrets.token_hex(32).encode())
    document = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(registry.storage)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {
            "addr": registry.hostport,
            "secret": http_secret.read_text().strip(),
            "tls": {"certificate": str(registry.cert), "key": str(registry.key)},
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
        "auth": {"htpasswd": {"realm": "slipway-lab", "path": str(registry.htpasswd)}},
    }
    return json.dumps(document, indent=2) + "\n"


# --- the daemon ----------------------------------------------------------------------------------


def answers(registry: LabRegistry, timeout: float = 2.0) -> bool:
    """Whether the registry answers /v2/ over TLS with the lab CA (401: it asks for sign-in)."""
    context = ssl.create_default_context(cafile=str(registry.ca_cert))
    try:
        with (
            socket.create_connection((str(registry.config.portal_ip), registry.port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=str(registry.config.portal_ip)) as conn,
        ):
            conn.sendall(f"GET /v2/ HTTP/1.0\r\nHost: {registry.hostport}\r\n\r\n".encode())
            return conn.recv(64).startswith((b"HTTP/1.0 401", b"HTTP/1.1 401"))
    except (OSError, ssl.SSLError):
        return False


def _running(registry: LabRegistry) -> int | None:
    pid = netns.pid_from(registry.pidfile)
    if pid is not None and str(registry.config_file) in netns.cmdline(pid):
        return pid
    return None


def up(config: LabConfig, log: Log = print) -> LabRegistry:
    """The lab registry, started (or repaired). Needs the lab bridge: it listens on its address."""
    if not Path(BINARY).exists():
        raise LabError(f"{BINARY} is missing: apt-get install docker-registry (`make up` installs it)")
    registry = LabRegistry.of(config)
    registry.dir.mkdir(parents=True, exist_ok=True)
    registry.dir.chmod(0o700)
    registry.storage.mkdir(exist_ok=True)
    config.run_dir.mkdir(parents=True, exist_ok=True)
    changed = _ensure_server_cert(registry)
    changed |= _ensure_credentials(registry)
    text = _config_text(registry)
    if not registry.config_file.exists() or registry.config_file.read_text() != text:
        _write_private(registry.config_file, text.encode())
        changed = True
    pid = _running(registry)
    if pid is not None and not changed and answers(registry):
        return registry
    stop(config)
    log(f"registry: starting docker-registry on {registry.url}")
    with open(registry.log_file, "ab") as out:
        process = subprocess.Popen(
            _low([BINARY, "serve", str(registry.config_file)]),
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives `manage.py lab up`
        )
    registry.pidfile.write_text(f"{process.pid}\n")
    netns.wait_for(lambda: answers(registry), 20, "registry", registry.log_file)
    return registry


def stop(config: LabConfig) -> None:
    """Stop the registry this module started (by its pidfile and config path, never by name)."""
    registry = LabRegistry.of(config)
    pid = _running(registry)
    if pid is not None:
        netns.terminate(pid)
    registry.pidfile.unlink(missing_ok=True)


def status(config: LabConfig) -> bool:
    registry = LabRegistry.of(config)
    return _running(registry) is not None and answers(registry)
