from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.applications.models import App, BaseImage, Release
from apps.hosts.models import Host


class Instance(models.Model):
    """One container of an app. The row is the desired state; the worker makes it so."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"
        FAILED = "failed", "Failed"
        REMOVING = "removing", "Removing"

    class Desired(models.TextChoices):
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"
        REMOVED = "removed", "Removed"

    SETTLED = {State.RUNNING, State.STOPPED, State.FAILED}

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="instance_set")
    slot = models.PositiveIntegerField()
    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="instances")
    # The base image version this instance runs. It follows the app's pinned version one
    # instance at a time during a rolling upgrade (and back, for one that failed its health
    # check); empty only on rows from before versions were tracked: the app's version then.
    image = models.ForeignKey(
        BaseImage, null=True, blank=True, on_delete=models.PROTECT, related_name="instances"
    )
    # The release this instance runs: it follows the app's release one instance (or batch) at a
    # time during a deploy, and goes back with a failed one. Empty: the app's release.
    release = models.ForeignKey(
        Release, null=True, blank=True, on_delete=models.SET_NULL, related_name="instances"
    )
    container_id = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    desired_state = models.CharField(max_length=20, choices=Desired.choices, default=Desired.RUNNING)
    # Where the app's port is published on the host (apps without an IP pool).
    host_port = models.PositiveIntegerField(null=True, blank=True)
    # The slot's static address on the public network (a copy of its IPAllocation, for display).
    address = models.GenericIPAddressField(null=True, blank=True)
    # Reserved on the host when placed; read by placement and capacity checks.
    memory_mb = models.PositiveIntegerField()
    cpus = models.DecimalField(max_digits=5, decimal_places=2)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["app", "slot"]
        constraints = [models.UniqueConstraint(fields=["app", "slot"], name="one_instance_per_slot")]
        indexes = [models.Index(fields=["host", "desired_state"])]

    def __str__(self) -> str:
        return self.container_name

    @property
    def container_name(self) -> str:
        return self.name_for(self.app.slug, self.slot)

    @staticmethod
    def name_for(app_slug: str, slot: int) -> str:
        # Deterministic, so a re-run finds and adopts the container it made before.
        return f"slw-{app_slug}-{slot}"

    @property
    def settled(self) -> bool:
        if self.desired_state == self.Desired.REMOVED:
            return False
        if self.state == self.State.FAILED:
            return True
        return self.state == self.desired_state

    @property
    def effective_port(self) -> int | None:
        """The port the app serves on in this instance: its release's, or that image's default."""
        release = self.release or self.app.release
        if release is not None:
            return release.port or release.base_image.default_port
        return self.app.port or (self.image or self.app.base_image).default_port

    @property
    def endpoint(self) -> str:
        if self.state != self.State.RUNNING:
            return ""
        if self.address:
            port = self.effective_port
            host = f"[{self.address}]" if ":" in self.address else self.address
            return f"{host}:{port}" if port else self.address
        if self.host_port:
            return f"{self.host.address}:{self.host_port}"
        return ""


class Operation(models.Model):
    """One row per change: the job record the worker claims, and the app's activity log."""

    class Kind(models.TextChoices):
        DEPLOY = "deploy", "Deploy"
        SCALE = "scale", "Scale"
        START = "start", "Start"
        STOP = "stop", "Stop"
        RESTART = "restart", "Restart"
        REMOVE = "remove", "Remove instance"
        REDEPLOY = "redeploy", "Redeploy"
        MOVE = "move", "Move instance"
        UPLOAD = "upload", "Upload files"
        DELETE = "delete", "Delete app"
        RECONCILE = "reconcile", "Reconcile"
        RESIZE = "resize", "Resize"
        UPGRADE = "upgrade", "Rolling upgrade"
        RELEASE = "release", "Deploy release"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    TERMINAL = {Status.SUCCEEDED, Status.FAILED}

    # Kept when the app is deleted: the log outlives it (app_slug says which app it was).
    app = models.ForeignKey(App, null=True, blank=True, on_delete=models.SET_NULL, related_name="operations")
    app_slug = models.CharField(max_length=40)
    instance = models.ForeignKey(
        Instance, null=True, blank=True, on_delete=models.SET_NULL, related_name="operations"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    params = models.JSONField(default=dict, blank=True)
    summary = models.CharField(max_length=300, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Touched by the worker while it runs the operation (apps.instances.heartbeat).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["app", "-created_at"]),
            models.Index(fields=["status", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.app_slug} ({self.status})"

    @property
    def terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def duration(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class Finding(models.Model):
    """Something the reconcile saw on a host that the database does not explain."""

    class Kind(models.TextChoices):
        UNKNOWN_CONTAINER = "unknown_container", "Unknown container with Slipway labels"
        FOREIGN_ADDRESS = "foreign_address", "Address in use that Slipway did not give out"
        IDLE_ADDRESS = "idle_address", "Allocated address that no container holds"
        # Signs that the fleet moved on past the database (restored from a backup): reported,
        # never acted on (apps.instances.ahead, docs/backup.md).
        NEWER_CONTAINER = "newer_container", "Container newer than the database"
        ELSEWHERE = "elsewhere", "Instance's container runs on another host"
        HELD = "held", "Repair held: the app's containers are newer than the database"

    # Empty for a finding about an address no host holds.
    host = models.ForeignKey(Host, null=True, blank=True, on_delete=models.CASCADE, related_name="findings")
    kind = models.CharField(max_length=40, choices=Kind.choices)
    subject = models.CharField(max_length=200, help_text="Container name, or the address")
    detail = models.TextField(blank=True)
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_seen"]
        constraints = [
            models.UniqueConstraint(
                fields=["host", "kind", "subject"],
                condition=models.Q(resolved_at__isnull=True),
                name="one_open_finding",
            )
        ]

    def __str__(self) -> str:
        return f"{self.host}: {self.get_kind_display()} {self.subject}"

    @classmethod
    def open(cls, host: Host | None, kind: str, subject: str, detail: str) -> None:
        """Report it, or refresh the open finding about the same subject."""
        now = timezone.now()
        updated = cls.objects.filter(kind=kind, subject=subject, resolved_at=None).update(
            host=host, detail=detail, last_seen=now
        )
        if not updated:
            cls.objects.create(host=host, kind=kind, subject=subject, detail=detail, last_seen=now)
