from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from apps.hosts.models import Host
from apps.hosts.transport import fingerprint

# A real ed25519 public key blob (generated for this test, not used anywhere).
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2zDXGsPLRXBumsCE2hOx1WRJ6cZXQcQtdKl2VLRoUj"


def test_fingerprint_matches_openssh_format() -> None:
    value = fingerprint(KEY)
    assert value.startswith("SHA256:")
    assert not value.endswith("=")
    assert len(value) == len("SHA256:") + 43


def test_fingerprint_refuses_something_that_is_not_a_key() -> None:
    with pytest.raises(ValueError, match="not an SSH public key"):
        fingerprint("hello")
    with pytest.raises(ValueError, match="not an SSH public key"):
        fingerprint("ssh-ed25519 !!!notbase64")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("address", "not an address!", "neither an IP address nor a host name"),
        ("address", "999.1.1.1", "neither an IP address nor a host name"),
        ("name", "Host_1", "lowercase letters"),
        ("ssh_port", 70000, "less than or equal to 65535"),
        ("ssh_user", "root; rm -rf /", "Not a valid Unix user name"),
        ("volume_root", "relative/path", "absolute path"),
        ("volume_root", "/srv/../etc", "absolute path"),
    ],
)
def test_bad_host_fields_are_refused_with_a_clear_message(
    db: None, field: str, value: object, message: str
) -> None:
    host = Host(name="h1", address="10.0.0.1")
    setattr(host, field, value)
    with pytest.raises(ValidationError) as caught:
        host.full_clean()
    assert field in caught.value.message_dict
    assert message in " ".join(caught.value.message_dict[field])


def test_a_host_name_and_address_validate(db: None) -> None:
    Host(name="docker-01", address="docker-01.example.internal").full_clean()
    Host(name="docker-02", address="10.1.2.3").full_clean()


def test_the_local_transport_needs_a_socket(db: None) -> None:
    host = Host(name="h1", address="10.0.0.1", docker_transport=Host.Transport.LOCAL)
    with pytest.raises(ValidationError, match="needs the daemon's socket path"):
        host.full_clean()


def test_a_new_host_awaits_key_confirmation(db: None) -> None:
    host = Host(name="h1", address="10.0.0.1", offered_host_key=KEY)
    assert host.state == Host.State.PENDING
    assert host.key_awaits_confirmation
    assert host.fingerprint == ""
    assert host.endpoint.host_key == ""
