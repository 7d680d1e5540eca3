"""What happened to an app's containers, as the hosts report it: starts, deaths (with the exit
code and the last lines the app printed), OOM kills, Docker's restarts, crash loops, and the
containers the portal replaced (their last lines kept, like `kubectl logs --previous`)."""

from __future__ import annotations

from django.db import models

from apps.applications.models import App
from apps.hosts.models import Host
from apps.instances.models import Instance


class ContainerEvent(models.Model):
    class Kind(models.TextChoices):
        STARTED = "started", "Started"
        STOPPED = "stopped", "Stopped"
        DIED = "died", "Died"
        OOM = "oom", "OOM kill"
        RESTARTED = "restarted", "Restarted by Docker"
        CRASH_LOOP = "crash_loop", "Crash loop"
        REPLACED = "replaced", "Container replaced"

    # What ended a container on its own: what "why did my app die" is about.
    DEATHS = (Kind.DIED, Kind.OOM, Kind.CRASH_LOOP)

    # Kept when the app is deleted, like operations (app_slug says which app it was).
    app = models.ForeignKey(App, null=True, on_delete=models.SET_NULL, related_name="container_events")
    app_slug = models.CharField(max_length=40)
    instance = models.ForeignKey(Instance, null=True, on_delete=models.SET_NULL, related_name="events")
    slot = models.PositiveIntegerField()
    host = models.ForeignKey(Host, null=True, on_delete=models.SET_NULL, related_name="container_events")
    host_name = models.CharField(max_length=100)
    container_id = models.CharField(max_length=64)
    container_name = models.CharField(max_length=80)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # When it happened, by the host's clock (Docker's time for what Docker reports).
    time = models.DateTimeField()
    exit_code = models.IntegerField(null=True, blank=True)
    oom = models.BooleanField(default=False, help_text="The kernel's OOM killer ended it")
    address = models.GenericIPAddressField(null=True, blank=True, help_text="Where it serves (a start)")
    detail = models.CharField(max_length=500, blank=True)
    # The last lines the container printed before this moment (deaths and replacements):
    # [stream, Docker's time, text] each, oldest first.
    lines = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-time", "-id"]
        indexes = [
            models.Index(fields=["app", "-time"]),
            models.Index(fields=["instance", "-time"]),
            models.Index(fields=["kind", "-time"]),
        ]
        constraints = [
            # A replayed stream (a watcher restarted, a window re-read) records nothing twice.
            models.UniqueConstraint(fields=["container_id", "kind", "time"], name="one_event_per_moment")
        ]

    def __str__(self) -> str:
        return f"{self.container_name} {self.get_kind_display()} at {self.time:%Y-%m-%d %H:%M:%S}"

    @property
    def summary(self) -> str:
        """One line for timelines, markers and messages."""
        name, kind = self.container_name, self.Kind
        code = f"exit code {self.exit_code}" if self.exit_code is not None else "no exit code"
        if self.kind == kind.DIED:
            return f"{name} died: {code}{' (OOM killed)' if self.oom else ''}"
        if self.kind == kind.OOM:
            return f"{name} ran out of memory: the kernel's OOM killer ended a process"
        if self.kind == kind.STARTED:
            return f"{name} started" + (f" at {self.address}" if self.address else "")
        if self.kind == kind.RESTARTED:
            return f"{name} restarted by Docker {self.detail}".strip()
        if self.kind == kind.CRASH_LOOP:
            return f"{name} is in a crash loop: {self.detail}"
        if self.kind == kind.STOPPED:
            return f"{name} {self.detail or 'stopped'}"
        return f"{name}: {self.detail or 'container replaced'}"


class EventCursor(models.Model):
    """Where a host's event stream was read up to: a watcher that restarts (or another that
    takes the host over) goes on from there and misses nothing Docker still remembers."""

    host = models.OneToOneField(Host, on_delete=models.CASCADE, related_name="event_cursor")
    time_ns = models.BigIntegerField(help_text="Docker's time of the last event handled (ns)")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.host} events read up to {self.time_ns}"
