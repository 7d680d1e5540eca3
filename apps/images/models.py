"""The image registry the portal publishes through, when ops configure one (issue 23)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Registry(models.Model):
    """The one registry (a single row, id 1). Enabled, publishing pushes each version there and
    the hosts pull it; otherwise the portal streams `docker load` archives over SSH. The
    password is sealed at rest (apps.applications.secret_env) and never shown back; it is
    opened only for the push and handed to each host's Docker only in its pull request."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    url = models.CharField(
        max_length=300,
        blank=True,
        help_text="https://host:port of the registry, e.g. https://registry.example:5000",
    )
    username = models.CharField(max_length=150, blank=True)
    password_sealed = models.TextField(blank=True, editable=False)
    ca_pem = models.TextField(
        "CA certificate",
        blank=True,
        help_text="PEM of the CA that signed the registry's certificate, if not a public one.",
    )
    enabled = models.BooleanField(default=False)
    checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = "image registry"
        verbose_name_plural = "image registry"
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="one_registry_row")]

    def __str__(self) -> str:
        return self.url or "no registry"

    @property
    def hostport(self) -> str:
        """host:port as Docker references name it (the registry part of host:port/name:tag)."""
        return self.url.removeprefix("https://").rstrip("/")

    @property
    def has_password(self) -> bool:
        return bool(self.password_sealed)

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.url)
