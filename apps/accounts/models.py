from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

slug_validator = RegexValidator(
    r"^[a-z][a-z0-9-]{1,39}$",
    "Use 2-40 characters: lowercase letters, digits and '-', starting with a letter.",
)


class Team(models.Model):
    slug = models.CharField(max_length=40, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=100)
    # Set by ops. Totals over the team's apps (limit x instances); empty: no quota.
    quota_memory_mb = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Memory the team's instances may reserve in total (MiB); empty: no quota",
    )
    quota_cpus = models.DecimalField(
        max_digits=7, decimal_places=2, null=True, blank=True, help_text="CPU cores in total; empty: no quota"
    )
    # A resize within quota that raises each instance by at most this much applies at once;
    # anything more waits for a lead. Decreases always apply at once.
    auto_approve_memory_mb = models.PositiveIntegerField(
        default=0, help_text="Per-instance memory increase (MiB) applied without a lead"
    )
    auto_approve_cpus = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=0,
        help_text="Per-instance CPU increase applied without a lead",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        DEVELOPER = "developer", "Developer"
        LEAD = "lead", "Team lead"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.DEVELOPER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="one_membership_per_team")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class ApiToken(models.Model):
    """A named API key of one user, with a scope and an expiry. Only the key's SHA-256 is kept,
    with its first characters (`prefix`) to tell tokens apart; the key itself is shown once, when
    it is made (apps/accounts/tokens.py)."""

    class Scope(models.TextChoices):
        READ = "read", "Read only"
        WRITE = "write", "Read and write"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=80)
    scope = models.CharField(max_length=10, choices=Scope.choices)
    prefix = models.CharField(max_length=16, help_text="The key's first characters: safe to show")
    key_hash = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the key, hex")
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    # Written at most once a minute per token (tokens.LAST_USE_EVERY), not on every request.
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_from = models.GenericIPAddressField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["user", "name"], name="api_token_user_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…) of {self.user}"

    def state_at(self, now: datetime) -> str:
        """ "revoked", "expired" or "active"."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= now:
            return "expired"
        return "active"

    @property
    def state(self) -> str:
        return self.state_at(timezone.now())


class LastSignIn(models.Model):
    """How a user last signed in: the authentication backend (directory, OIDC, local password).
    A request with an API token has no session to say it, and a token of someone who last signed
    in through the directory has their groups reread as an open terminal does
    (apps.accounts.directory.token_recheck). Written at each sign-in (apps/accounts/receivers.py)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="last_sign_in"
    )
    backend = models.CharField(max_length=200)
    at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.user} through {self.backend} at {self.at}"
