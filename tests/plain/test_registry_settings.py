"""The registry's settings (issue 23): what is allowed in each field, said plainly; only ops set
them; the password is sealed and never shown back (page, API, admin, audit); a registry that
cannot be reached is refused at save time. The lab test checks against the real registry."""

from __future__ import annotations

import datetime
import socket

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client
from rest_framework.test import APIClient

from apps.applications import secret_env
from apps.audit.models import AuditEntry
from apps.images import registry_settings
from apps.images.models import Registry

PASSWORD = "s3cret-registry-pass"


def _ca_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://registry.example:5000", "over TLS"),
        ("registry.example:5000", "over TLS"),
        ("https://registry.example:5000/v2", "not a registry's address"),
        ("https://user:pw@registry.example:5000", "not a registry's address"),
        ("https://registry.example:5000?x=1", "not a registry's address"),
        ("https://bad_host:5000", "not a registry's address"),
    ],
)
def test_it_refuses_a_url_that_is_not_a_registrys_https_root(url: str, said: str) -> None:
    with pytest.raises(ValidationError) as caught:
        registry_settings.validate_url(url)
    assert said in caught.value.message_dict["url"][0]
    assert "https://host:port" in caught.value.message_dict["url"][0]


def test_it_keeps_a_url_without_its_trailing_slash() -> None:
    assert registry_settings.validate_url(" https://10.0.0.1:5443/ ") == "https://10.0.0.1:5443"


def test_it_takes_a_pem_certificate_and_refuses_anything_else() -> None:
    pem = _ca_pem()
    assert registry_settings.validate_ca(pem) == pem.strip() + "\n"
    assert registry_settings.validate_ca("  ") == ""
    for text, said in [
        ("not a certificate", "in PEM"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----", "not a valid PEM certificate"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "private key"),
    ]:
        with pytest.raises(ValidationError) as caught:
            registry_settings.validate_ca(text)
        assert said in caught.value.message_dict["ca_pem"][0]


def test_only_ops_configure_the_registry(owner: User, lead: User) -> None:
    for user in (owner, lead):
        with pytest.raises(PermissionDenied, match="Only ops configure the image registry"):
            registry_settings.registry_save(user=user, url="https://r.example:5000", enabled=False)
    assert not Registry.objects.exists()


def test_an_unreachable_registry_is_refused_at_save_time_and_nothing_is_saved(ops: User) -> None:
    url = f"https://127.0.0.1:{_closed_port()}"
    with pytest.raises(ValidationError) as caught:
        registry_settings.registry_save(user=ops, url=url, username="u", password=PASSWORD)
    assert caught.value.message_dict["url"] == [
        f"Not saved: cannot reach {url}: connection refused (is the registry running and listening there?)."
    ]
    assert not Registry.objects.exists()
    assert not AuditEntry.objects.filter(action="registry.save").exists()


def test_a_password_needs_a_username_and_the_mask_is_not_a_password(ops: User) -> None:
    with pytest.raises(ValidationError) as caught:
        registry_settings.registry_save(
            user=ops, url="https://r.example:5000", password=PASSWORD, enabled=False
        )
    assert "username" in caught.value.message_dict
    with pytest.raises(ValidationError, match="mask"):
        registry_settings.registry_save(
            user=ops, url="https://r.example:5000", username="u", password=secret_env.MASK, enabled=False
        )


def test_the_password_is_sealed_kept_replaced_cleared_and_never_shown(ops: User, client: Client) -> None:
    row = registry_settings.registry_save(
        user=ops, url="https://r.example:5000", username="pusher", password=PASSWORD, enabled=False
    )
    assert row.password_sealed.startswith("gAAAAA") and PASSWORD not in row.password_sealed
    assert registry_settings.access(row).password == PASSWORD
    # Saved again without a password: the one set stays.
    row = registry_settings.registry_save(
        user=ops, url="https://r.example:5000", username="pusher", enabled=False
    )
    assert registry_settings.access(row).password == PASSWORD

    client.force_login(ops)
    page = client.get("/images/registry/").content.decode()
    assert "set (hidden)" in page and PASSWORD not in page and row.password_sealed not in page
    admin = client.get("/admin/images/registry/1/change/").content.decode()
    assert PASSWORD not in admin and row.password_sealed not in admin
    api = APIClient()
    api.force_authenticate(ops)
    answer = api.get("/api/v1/registry/").json()
    assert answer["password_set"] is True and "password" not in answer
    assert PASSWORD not in str(list(AuditEntry.objects.values_list("summary", "data")))

    row = registry_settings.registry_save(
        user=ops, url="https://r.example:5000", username="pusher", clear_password=True, enabled=False
    )
    assert row.password_sealed == "" and not row.active


def test_the_page_shows_a_refusal_in_place_with_422(ops: User, client: Client) -> None:
    client.force_login(ops)
    answer = client.post(
        "/images/registry/",
        {"url": "http://r.example:5000", "username": "", "ca_pem": "", "enabled": "on"},
        HTTP_HX_REQUEST="true",
    )
    assert answer.status_code == 422
    body = answer.content.decode()
    assert 'id="registry-card"' in body and "<html" not in body
    assert "Docker pulls from a registry over TLS" in body
    saved = client.post(
        "/images/registry/",
        {"url": "https://r.example:5000", "username": "u", "password": PASSWORD, "ca_pem": ""},
        HTTP_HX_REQUEST="true",
    )
    assert saved.status_code == 200
    assert "Saved: publishing streams over SSH" in saved.content.decode()
    assert PASSWORD not in saved.content.decode()


def test_the_api_saves_through_the_same_checks(ops: User, owner: User) -> None:
    api = APIClient()
    api.force_authenticate(owner)
    assert api.put("/api/v1/registry/", {"url": "https://r.example:5000"}, format="json").status_code == 403
    api.force_authenticate(ops)
    refused = api.put("/api/v1/registry/", {"url": "http://r.example:5000", "enabled": False}, format="json")
    assert refused.status_code == 400 and "over TLS" in refused.json()["url"][0]
    saved = api.put(
        "/api/v1/registry/",
        {"url": "https://r.example:5000", "username": "u", "password": PASSWORD, "enabled": False},
        format="json",
    )
    assert saved.status_code == 200, saved.json()
    assert saved.json()["password_set"] is True and PASSWORD not in saved.content.decode()
