"""Ops' registry settings: URL, credentials and CA, checked against the registry before they are
saved (a registry that cannot be reached, is not trusted or rejects the credentials is refused
then, not at the first publish). The page, the API and the admin all save through
`registry_save`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from apps.accounts import permissions
from apps.applications import secret_env
from apps.audit import services as audit
from apps.images import registry
from apps.images.imagebuild import DOMAIN
from apps.images.models import Registry

URL_ALLOWED = "use https://host:port of the registry (its root: no path, no user, no query), e.g. https://registry.example:5000"
MAX_CA = 64 * 1024


def validate_url(url: str) -> str:
    """The URL as stored (no trailing slash); ValidationError saying what is allowed."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ValidationError(
            {"url": f"{url or 'An empty URL'}: Docker pulls from a registry over TLS, so {URL_ALLOWED}."}
        )
    if (
        parts.path
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
        or not DOMAIN.fullmatch(parts.netloc)
    ):
        raise ValidationError({"url": f"{url} is not a registry's address: {URL_ALLOWED}."})
    return url


def validate_ca(pem: str) -> str:
    """One or more PEM certificates (stripped of blank edges); ValidationError otherwise."""
    pem = pem.strip()
    if not pem:
        return ""
    if "PRIVATE KEY" in pem:
        raise ValidationError({"ca_pem": "That is a private key: give the CA's certificate (never its key)."})
    if len(pem) > MAX_CA or "-----BEGIN CERTIFICATE-----" not in pem:
        raise ValidationError(
            {
                "ca_pem": "Give the CA certificate in PEM: -----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----."
            }
        )
    try:
        x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise ValidationError(
            {"ca_pem": f"The CA certificate is not a valid PEM certificate: {exc}"}
        ) from None
    return pem + "\n"


def registry_get() -> Registry:
    """The one row (unsaved and empty when ops never configured a registry)."""
    return Registry.objects.filter(pk=1).first() or Registry(pk=1)


def registry_active() -> Registry | None:
    """The registry publishing goes through, or None: SSH streaming."""
    return Registry.objects.filter(pk=1, enabled=True).exclude(url="").first()


def password_rotate() -> int:
    """The registry password sealed again with the first of SECRETS_KEYS (in the caller's
    transaction: `manage.py rotate_secrets`); how many values, 0 or 1."""
    row = Registry.objects.select_for_update().filter(pk=1).exclude(password_sealed="").first()
    if row is None:
        return 0
    sealed = secret_env.rotate({"password": row.password_sealed}, what="The registry")["password"]
    Registry.objects.filter(pk=1).update(password_sealed=sealed)
    return 1


secret_env.sealed_store("registry credentials", password_rotate)


@sensitive_variables()  # it holds the opened password
def access(row: Registry) -> registry.Access:
    """How to reach it, the password opened (for the check, the push and the hosts' pulls only)."""
    password = secret_env.unseal("registry password", row.password_sealed) if row.password_sealed else ""
    return registry.Access(url=row.url, username=row.username, password=password, ca_pem=row.ca_pem)


def registry_save(
    *,
    user: Any,
    url: str,
    username: str = "",
    password: str | None = None,
    clear_password: bool = False,
    ca_pem: str = "",
    enabled: bool = True,
) -> Registry:
    """Ops: set the registry. `password` None keeps the stored one, `clear_password` removes it.
    Enabled, the registry is checked first with these very settings: it answers /v2/ over TLS
    with the CA, takes the credentials and lets them push."""
    permissions.require_ops(user, "configure the image registry")
    return registry_set(
        user=user,
        url=url,
        username=username,
        password=password,
        clear_password=clear_password,
        ca_pem=ca_pem,
        enabled=enabled,
    )


@transaction.atomic
def registry_set(
    *,
    user: Any,
    url: str,
    username: str,
    password: str | None,
    clear_password: bool,
    ca_pem: str,
    enabled: bool,
) -> Registry:
    """registry_save without the ops check: for `manage.py lab up --registry`, which sets up the
    lab's registry as ops would."""
    row = Registry.objects.select_for_update().filter(pk=1).first() or Registry(pk=1)
    errors: dict[str, list[str]] = {}
    username = username.strip()
    if url.strip() or enabled:
        try:
            url = validate_url(url)
        except ValidationError as exc:
            errors.update(exc.message_dict)
    try:
        ca_pem = validate_ca(ca_pem)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if len(username) > 150 or any(c in username for c in ":\n\r"):
        errors["username"] = ["A username of at most 150 characters, without ':' or line breaks."]
    if password is not None and ("\n" in password or "\r" in password or len(password) > 1024):
        errors["password"] = ["A password of at most 1024 characters, without line breaks."]
    if password and not username:
        errors["username"] = ["Give the username the password belongs to."]
    if password == secret_env.MASK:
        errors["password"] = [
            f"{secret_env.MASK} is the mask shown in place of the password: type the password."
        ]
    if errors:
        raise ValidationError(errors)
    sealed = row.password_sealed
    if clear_password:
        sealed = ""
    elif password:
        sealed = secret_env.seal(password)
    changed_credentials = sealed != row.password_sealed or username != row.username
    candidate = Registry(pk=1, url=url.strip(), username=username, password_sealed=sealed, ca_pem=ca_pem)
    if enabled:
        try:
            registry.check(access(candidate), settings.REGISTRY_TIMEOUT)
        except registry.RegistryError as exc:
            raise ValidationError({exc.field: [f"Not saved: {exc}."]}) from None
    row.url, row.username, row.password_sealed, row.ca_pem = candidate.url, username, sealed, ca_pem
    row.enabled = enabled
    row.checked_at = timezone.now() if enabled else row.checked_at
    row.updated_by = user if getattr(user, "is_authenticated", False) else None
    row.full_clean()
    row.save()
    if row.enabled:
        summary = f"publish through the registry {row.url} as {row.username or 'anonymous'}"
    else:
        summary = f"publish by SSH streaming (registry {row.url or 'none'} off)"
    audit.record(
        "registry.save",
        summary,
        actor=user,
        obj=row,
        data={
            "url": row.url,
            "username": row.username,
            "enabled": row.enabled,
            "ca_certificate": bool(row.ca_pem),
            "credentials_changed": changed_credentials,
        },
    )
    return row
