from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

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
