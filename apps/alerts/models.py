"""Alerts: rules (ops' defaults, a team's own), the alerts they raise (one row per condition
while it lasts), and where they go: in-portal notifications, email, and webhooks whose every
delivery is a row (signed, retried with back-off)."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from apps.accounts.models import Team
from apps.applications import secret_env
from apps.applications.models import App
from apps.hosts.models import Host
from apps.instances.models import Instance


class Kind(models.TextChoices):
    OOM_KILL = "oom_kill", "OOM kill"
    CRASH_LOOP = "crash_loop", "Crash loop"
    INSTANCE_DOWN = "instance_down", "Instance down"
    MEMORY_HIGH = "memory_high", "Memory near the limit"
    CPU_THROTTLED = "cpu_throttled", "CPU throttled"
    HOST_UNREACHABLE = "host_unreachable", "Host unreachable"
    OPERATION_FAILED = "operation_failed", "Operation failed"
    REQUEST_WAITING = "request_waiting", "Resource request waiting"


# What each kind measures against, as ops get it before they change anything: (threshold %,
# for how long in seconds, repeat every N minutes while it lasts). For the one-shot kinds (an OOM
# kill, a failed operation) "for" is how long it stays firing without a new one.
DEFAULTS: dict[str, tuple[int | None, int, int]] = {
    Kind.OOM_KILL: (None, 600, 60),
    Kind.CRASH_LOOP: (None, 0, 60),
    Kind.INSTANCE_DOWN: (None, 60, 60),
    Kind.MEMORY_HIGH: (90, 300, 120),
    Kind.CPU_THROTTLED: (50, 300, 120),
    Kind.HOST_UNREACHABLE: (None, 60, 30),
    Kind.OPERATION_FAILED: (None, 3600, 0),
    Kind.REQUEST_WAITING: (None, 4 * 3600, 24 * 60),
}
WITH_THRESHOLD = {Kind.MEMORY_HIGH, Kind.CPU_THROTTLED}
# About the fleet, not an app: ops' alone.
OPS_ONLY = {Kind.HOST_UNREACHABLE}


class Rule(models.Model):
    """One kind's settings: ops' default (no team) or a team's own, which replaces the default
    for the team's apps."""

    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="alert_rules"
    )
    kind = models.CharField(max_length=30, choices=Kind.choices)
    enabled = models.BooleanField(default=True)
    threshold_pct = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Memory: % of the limit; CPU: % of the time throttled"
    )
    for_seconds = models.PositiveIntegerField(help_text="How long the condition lasts before it fires")
    repeat_minutes = models.PositiveIntegerField(
        help_text="Said again at most this often while it lasts (0: once)"
    )
    notify_portal = models.BooleanField(default=True, help_text="In-portal notifications")
    notify_email = models.BooleanField(default=False)
    notify_webhooks = models.BooleanField(default=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["team_id", "kind"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind"], condition=models.Q(team=None), name="one_default_per_kind"
            ),
            models.UniqueConstraint(fields=["team", "kind"], name="one_rule_per_team_and_kind"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.team or 'default'})"


class Alert(models.Model):
    """One condition while it lasts: fired once, said again at most every repeat_minutes,
    resolved when it ends."""

    class State(models.TextChoices):
        FIRING = "firing", "Firing"
        RESOLVED = "resolved", "Resolved"

    kind = models.CharField(max_length=30, choices=Kind.choices)
    # What it is about, unique among firing alerts: "crash_loop:instance:12".
    key = models.CharField(max_length=200)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    app = models.ForeignKey(App, null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts")
    app_slug = models.CharField(max_length=40, blank=True)
    instance = models.ForeignKey(Instance, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    host = models.ForeignKey(Host, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    subject = models.CharField(max_length=200, help_text="The instance, host or request it is about")
    summary = models.CharField(max_length=300)
    detail = models.TextField(blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.FIRING)
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(help_text="When the condition was last seen to hold")
    last_notified_at = models.DateTimeField(null=True, blank=True)
    notified = models.PositiveIntegerField(default=0, help_text="Times said (first, repeats)")
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["key"], condition=models.Q(state="firing"), name="one_firing_alert_per_key"
            )
        ]
        indexes = [models.Index(fields=["state", "kind"]), models.Index(fields=["team", "-started_at"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.subject} ({self.state})"


def _secret() -> str:
    """A new signing secret, in clear (migration 0001 names this function)."""
    return secrets.token_hex(32)


def _sealed_secret() -> str:
    return secret_env.seal(_secret())


def validate_sealed_secret(value: object) -> None:
    if not secret_env.is_sealed(value):
        raise ValidationError(
            "A webhook keeps its signing secret sealed (with SECRETS_KEYS) only; a new webhook gets one made "
            "and sealed for it."
        )


class Webhook(models.Model):
    """Where alerts and instance lifecycle events are POSTed as JSON, signed with the secret:
    a team's (its apps) or ops' (everything).

    The secret is kept sealed like apps' secrets (apps.applications.secret_env): it is opened to
    sign a delivery, and once to show it to whoever made the webhook (`secret_opened`)."""

    class Topic(models.TextChoices):
        ALERTS = "alerts", "Alerts (firing, repeated, resolved)"
        LIFECYCLE = "lifecycle", "Instance lifecycle (started, stopped, moved)"

    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="webhooks")
    name = models.CharField(max_length=80)
    url = models.URLField(max_length=500)
    secret_sealed = models.TextField(
        default=_sealed_secret,
        editable=False,
        validators=[validate_sealed_secret],
        help_text="The signing secret, sealed with SECRETS_KEYS",
    )
    topics = models.JSONField(default=list, help_text="alerts, lifecycle")
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team_id", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.team or 'ops'})"

    def secret_opened(self) -> str:
        """The signing secret in clear: to sign a delivery, or to show it the once. Raises
        SecretUnreadable, naming the webhook, when no key in SECRETS_KEYS opens it."""
        return secret_env.unseal(f"of the webhook {self.name} (id {self.pk})", self.secret_sealed)


class Delivery(models.Model):
    """One POST of one event to one webhook, until it is answered with 2xx or runs out of
    attempts; its row is its job record (apps.alerts.delivery)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    alert = models.ForeignKey(
        Alert, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    event = models.CharField(
        max_length=40, help_text="alert.firing, alert.repeat, alert.resolved, instance.*"
    )
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(help_text="Not tried again before; also a claim's expiry")
    response_status = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.event} to {self.webhook} ({self.status})"


class Notification(models.Model):
    """An alert said to one person in the portal (the badge counts the unread)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="notifications")
    text = models.CharField(max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "read_at"])]

    def __str__(self) -> str:
        return f"{self.user}: {self.text}"
