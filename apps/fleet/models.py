"""Fleet work above the hosts: draining a host, and what-if fleets for the planner. The tables
were made by the hosts app (`hosts_drain`, `hosts_fleetscenario`) and keep their names."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.hosts.models import Host
from portal import jobs


class Drain(jobs.JobRecord):
    """Emptying a host: its instances recreated on other hosts one at a time (same slot, address,
    limits and volume data), so each app keeps serving. The host takes nothing new meanwhile."""

    class State(models.TextChoices):
        RUNNING = "running", "Draining"
        DONE = "done", "Empty"
        FAILED = "failed", "Stopped on an error"
        CANCELLED = "cancelled", "Cancelled"

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="drains")
    state = models.CharField(max_length=20, choices=State.choices, default=State.RUNNING)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    current = models.CharField(max_length=300, blank=True, help_text="The move under way")
    # One line per finished move: "slw-web-0 → lab-h2 (1.2 s)".
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "hosts_drain"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["host"], condition=models.Q(state="running"), name="one_drain_at_a_time"
            )
        ]

    def __str__(self) -> str:
        return f"drain of {self.host.name} ({self.state})"

    @property
    def percent(self) -> int:
        return (
            100
            if self.state == self.State.DONE or not self.total
            else min(100, self.done * 100 // self.total)
        )


class Preparation(jobs.JobRecord):
    """Getting a registered host ready to take instances, step by step: the agent installed,
    the doctor's checks, the fixes that are safe to apply, the base images it lacks, and the
    checks once more. Each step's outcome is kept on the row (and the host's history)."""

    class State(models.TextChoices):
        RUNNING = "running", "Preparing"
        READY = "ready", "Ready"
        NEEDS_OPS = "needs_ops", "Needs ops"
        FAILED = "failed", "Stopped on an error"

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="preparations")
    state = models.CharField(max_length=20, choices=State.choices, default=State.RUNNING)
    # [{"name": "install the agent", "state": "done|running|failed|skipped|waiting", "detail": "..."}]
    steps = models.JSONField(default=list, blank=True)
    # Ops confirmed that dockerd may be restarted to take its settings (daemon.json); without
    # that, the step only says what it would write.
    restart_dockerd = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["host"], condition=models.Q(state="running"), name="one_preparation_at_a_time"
            )
        ]

    def __str__(self) -> str:
        return f"preparation of {self.host.name} ({self.state})"


class FleetScenario(models.Model):
    """A made-up fleet for what-if planning (`manage.py synthetic_fleet`): hosts and instances as
    plain numbers, never placed on and never probed."""

    name = models.CharField(max_length=80, unique=True)
    description = models.CharField(max_length=300, blank=True)
    # [[id, name, memory_mb, cpus, usable], ...] and [[id, app_id, host_id, memory_mb, cpus, used_mb, used_cpu], ...]
    hosts = models.JSONField(default=list)
    items = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "hosts_fleetscenario"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


# A running drain is work for a worker (apps.fleet.drain.run); the task keeps its old name.
DRAIN = jobs.register(jobs.Kind("drain", Drain, task="hosts.drain", active=Q(state=Drain.State.RUNNING)))
PREPARE = jobs.register(
    jobs.Kind("prepare", Preparation, task="fleet.prepare", active=Q(state=Preparation.State.RUNNING))
)
