"""Resource requests: a developer asks for more (or less) memory and CPU for an app, a lead of
its team (or ops) decides, a worker applies the change live on every instance.

Every request and decision leaves a ResourceEvent (the audit trail and the app's history)."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models

from apps.applications.models import App


class ResourceRequest(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "Waiting for a lead"
        APPROVED = "approved", "Approved, applying"
        APPLIED = "applied", "Applied"
        PARTIAL = "partial", "Partially applied"
        REJECTED = "rejected", "Rejected"
        CANCELLED = "cancelled", "Cancelled"

    # At most one per app in these states (a database constraint, not only a check in Python).
    OPEN = (State.PENDING, State.APPROVED, State.PARTIAL)

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="resource_requests")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="resource_requests"
    )
    reason = models.TextField()
    # Limits before and asked for, per instance.
    old_memory_mb = models.PositiveIntegerField()
    old_cpus = models.DecimalField(max_digits=5, decimal_places=2)
    memory_mb = models.PositiveIntegerField()
    cpus = models.DecimalField(max_digits=5, decimal_places=2)
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    auto_approved = models.BooleanField(
        default=False, help_text="Within quota and the team's auto-approve step"
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)
    # What applying found, per instance: {"slw-web-0": {"ok": true, "memory_mb": 128, ...}}
    result = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["app"],
                condition=models.Q(state__in=["pending", "approved", "partial"]),
                name="one_open_request_per_app",
            )
        ]
        indexes = [models.Index(fields=["state", "created_at"])]

    def __str__(self) -> str:
        return f"{self.app.slug}: {self.change_text} ({self.state})"

    @property
    def change_text(self) -> str:
        parts = []
        if self.memory_mb != self.old_memory_mb:
            parts.append(f"memory {self.old_memory_mb} → {self.memory_mb} MiB")
        if Decimal(self.cpus) != Decimal(self.old_cpus):
            parts.append(f"CPU {self.old_cpus} → {self.cpus}")
        return ", ".join(parts) or "no change"

    @property
    def open(self) -> bool:
        return self.state in self.OPEN


class ResourceEvent(models.Model):
    """One line of a request's history: asked, auto-approved, approved, rejected, applied..."""

    request = models.ForeignKey(ResourceRequest, on_delete=models.CASCADE, related_name="events")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    action = models.CharField(max_length=30)
    detail = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.request_id}: {self.action}"
