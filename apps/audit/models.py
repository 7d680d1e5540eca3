from __future__ import annotations

from django.conf import settings
from django.db import models


class Source(models.TextChoices):
    PAGE = "page", "page"
    API = "api", "API"
    CLI = "cli", "CLI"
    ADMIN = "admin", "admin"
    WORKER = "worker", "worker"
    RECONCILE = "reconcile", "reconcile"
    SYSTEM = "system", "command line"


class AuditEntry(models.Model):
    """One change: who (a person, or the portal itself), when, what, on which object, from where.
    Objects are named by type, id and their name at the time, so a row outlives what it names.
    Never holds a secret's value: callers give names, the service refuses anything else."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The actor's username when it was written ("" for the portal itself).
    actor_name = models.CharField(max_length=150, blank=True, db_index=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    address = models.GenericIPAddressField(null=True, blank=True, help_text="The client's address")
    action = models.CharField(max_length=60, db_index=True, help_text='e.g. "app.scale"')
    object_type = models.CharField(max_length=40, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    # The team the object belongs to, when it belongs to one (for filtering).
    team = models.ForeignKey(
        "accounts.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    team_slug = models.CharField(max_length=40, blank=True)
    summary = models.CharField(max_length=500)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object")]
        verbose_name = "audit entry"
        verbose_name_plural = "audit trail"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name or 'Slipway'} {self.action} {self.object_repr}"
