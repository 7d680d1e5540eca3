"""A real directory for the sign-in tests: Debian's slapd on 127.0.0.1 and a free port, with
its own configuration and mdb database in a temporary directory, loaded with slapadd before it
starts and stopped by its pid.

The directory (suffix dc=slipway,dc=test):

| user | password | groups |
|---|---|---|
| alice | alice-pw | alpha-devs |
| bob | bob-pw | alpha-devs, alpha-leads |
| carol | carol-pw | ops |
| dave | dave-pw | unmapped (a group the mapping does not name) |
| erin | erin-pw | beta-devs (team beta does not exist until someone is given a role in it) |
| dev | directory-dev-pw | alpha-leads (the demo's local `dev` has the same name) |
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ldap
import ldap.modlist
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from portal import signin

SUFFIX = "dc=slipway,dc=test"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PW = "admin-secret"
# The portal reads the directory as a service account, as it would in a company.
SERVICE_DN = f"cn=slipway,ou=services,{SUFFIX}"
SERVICE_PW = "service-secret"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
USERS = {
    "alice": ("alice-pw", ["alpha-devs"]),
    "bob": ("bob-pw", ["alpha-devs", "alpha-leads"]),
    "carol": ("carol-pw", ["ops"]),
    "dave": ("dave-pw", ["unmapped"]),
    "erin": ("erin-pw", ["beta-devs"]),
    "dev": ("directory-dev-pw", ["alpha-leads"]),
}
GROUP_NAMES = ["alpha-devs", "alpha-leads", "beta-devs", "ops", "unmapped"]

CONFIG = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {dir}/slapd.pid
database mdb
maxsize 16777216
suffix "{suffix}"
rootdn "{admin}"
rootpw {admin_pw}
directory {dir}/data
TLSCACertificateFile {dir}/ca.pem
TLSCertificateFile {dir}/server.pem
TLSCertificateKeyFile {dir}/server.key
access to attrs=userPassword by anonymous auth by self write by * none
access to * by users read by * none
"""


def group_dn(name: str) -> str:
    return f"cn={name},{GROUPS}"


def user_dn(name: str) -> str:
    return f"uid={name},{PEOPLE}"


def _user_attrs(name: str) -> dict[str, list[bytes]]:
    password = USERS[name][0]
    attrs = {
        "objectClass": "inetOrgPerson",
        "uid": name,
        "cn": f"{name.title()} Tester",
        "givenName": name.title(),
        "sn": "Tester",
        "mail": f"{name}@example.test",
        "userPassword": password,
    }
    return {attr: [value.encode()] for attr, value in attrs.items()}


def _ldif() -> str:
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Slipway test\ndc: slipway",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people",
        f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups",
        f"dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services",
        f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: slipway\nuserPassword: {SERVICE_PW}",
    ]
    for name in USERS:
        lines = "\n".join(
            f"{attr}: {value.decode()}" for attr, values in _user_attrs(name).items() for value in values
        )
        entries.append(f"dn: {user_dn(name)}\n{lines}")
    for group in GROUP_NAMES:
        members = [user_dn(name) for name, (_, groups) in USERS.items() if group in groups]
        # groupOfNames needs a member: the service account stands in for an empty group.
        lines = "\n".join(f"member: {dn}" for dn in members or [SERVICE_DN])
        entries.append(f"dn: {group_dn(group)}\nobjectClass: groupOfNames\ncn: {group}\n{lines}")
    return "\n\n".join(entries) + "\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _certificates(workdir: Path) -> None:
    """A CA and a certificate it signs for 127.0.0.1, so StartTLS can be tested for real."""
    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key: Any, issuer: str, signer: Any, *, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("Slipway test CA", ca_key, "Slipway test CA", ca_key, ca=True)
    server = cert("127.0.0.1", server_key, "Slipway test CA", ca_key, ca=False)
    (workdir / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (workdir / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (workdir / "server.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


@dataclass
class Directory:
    uri: str
    pid: int
    # The CA that signed slapd's certificate (StartTLS).
    ca_file: str

    def _admin(self) -> Any:
        conn = ldap.initialize(self.uri)
        conn.simple_bind_s(ADMIN_DN, ADMIN_PW)
        return conn

    def remove_member(self, group: str, user: str) -> None:
        conn = self._admin()
        try:
            [(_, attrs)] = conn.search_s(group_dn(group), ldap.SCOPE_BASE, attrlist=["member"])
            members = [m for m in attrs["member"] if m.decode().lower() != user_dn(user).lower()]
            # groupOfNames needs a member: the service account stands in for an empty group.
            conn.modify_s(group_dn(group), [(ldap.MOD_REPLACE, "member", members or [SERVICE_DN.encode()])])
        finally:
            conn.unbind_s()

    def add_member(self, group: str, user: str) -> None:
        conn = self._admin()
        try:
            with contextlib.suppress(ldap.TYPE_OR_VALUE_EXISTS):
                conn.modify_s(group_dn(group), [(ldap.MOD_ADD, "member", [user_dn(user).encode()])])
        finally:
            conn.unbind_s()

    def delete_user(self, user: str) -> None:
        """The user's entry gone from the directory, as when someone leaves the company (their
        groups still name them, as a directory that does not tidy groups would)."""
        conn = self._admin()
        try:
            conn.delete_s(user_dn(user))
        finally:
            conn.unbind_s()

    def reset(self) -> None:
        """Every user and every group's members as in the table above (tests change them)."""
        conn = self._admin()
        try:
            for name in USERS:
                try:
                    conn.search_s(user_dn(name), ldap.SCOPE_BASE, attrlist=["uid"])
                except ldap.NO_SUCH_OBJECT:
                    conn.add_s(user_dn(name), ldap.modlist.addModlist(_user_attrs(name)))
            for group in GROUP_NAMES:
                members = [user_dn(n) for n, (_, groups) in USERS.items() if group in groups] or [SERVICE_DN]
                conn.modify_s(group_dn(group), [(ldap.MOD_REPLACE, "member", [m.encode() for m in members])])
        finally:
            conn.unbind_s()

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """The portal's settings for this directory, made by the code that makes them from the
        environment (portal.signin), with the mapping the tests use."""
        values: dict[str, Any] = {
            "server_uri": self.uri,
            "bind_dn": SERVICE_DN,
            "bind_password": SERVICE_PW,
            "user_search_base": PEOPLE,
            "user_filter": "(uid=%(user)s)",
            "group_search_base": GROUPS,
            "group_type": "groupOfNames",
            "start_tls": False,
            "ca_file": "",
            "timeout": 2.0,
            "ops_groups": group_dn("ops"),
            "team_groups": (
                f"{group_dn('alpha-devs')} => alpha:developer; {group_dn('alpha-leads')} => alpha:lead\n"
                f"{group_dn('beta-devs')} => beta:developer"
            ),
        } | overrides
        return signin.ldap_settings(**values) | {
            "LDAP_SERVER_URI": values["server_uri"],
            "AUTHENTICATION_BACKENDS": [
                "apps.accounts.directory.DirectoryBackend",
                "django.contrib.auth.backends.ModelBackend",
            ],
        }


@contextlib.contextmanager
def running_slapd() -> Iterator[Directory]:
    """slapd started for the caller and stopped (by its pid) afterwards, even on failure."""
    workdir = Path(tempfile.mkdtemp(prefix="slipway-slapd-"))
    proc: subprocess.Popen[bytes] | None = None
    log = (workdir / "slapd.log").open("wb")
    try:
        (workdir / "data").mkdir()
        conf = workdir / "slapd.conf"
        conf.write_text(CONFIG.format(dir=workdir, suffix=SUFFIX, admin=ADMIN_DN, admin_pw=ADMIN_PW))
        (workdir / "data.ldif").write_text(_ldif())
        _certificates(workdir)
        subprocess.run(
            ["/usr/sbin/slapadd", "-q", "-f", str(conf), "-l", str(workdir / "data.ldif")],
            check=True,
            capture_output=True,
        )
        port = _free_port()
        uri = f"ldap://127.0.0.1:{port}/"
        # -d 0: in the foreground, so the pid is slapd's own and ours to stop.
        proc = subprocess.Popen(
            ["/usr/sbin/slapd", "-h", uri, "-f", str(conf), "-d", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        directory = Directory(uri=uri, pid=proc.pid, ca_file=str(workdir / "ca.pem"))
        deadline = time.monotonic() + 10
        while True:
            try:
                directory._admin().unbind_s()
                break
            except ldap.SERVER_DOWN:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"slapd did not start: {(workdir / 'slapd.log').read_text()}"
                    ) from None
                time.sleep(0.05)
        yield directory
    finally:
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
