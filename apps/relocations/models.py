"""Moving an app from a legacy VM into a container: the VM as registered (address, SSH user,
pinned host key), its inspections (kept reports), the owner's plan, and each run's steps.

The VM is only ever read, except for the cutover: its service is stopped and the kept address
released there, and a rollback puts both back. Its files are never changed."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.accounts.models import Team
from apps.applications.models import App
from apps.hosts.models import Host
from portal import jobs


class Relocation(jobs.JobRecord):
    class State(models.TextChoices):
        NEW = "new", "Host key to confirm"
        READY = "ready", "Ready to inspect"
        INSPECTING = "inspecting", "Inspecting"
        INSPECTED = "inspected", "Inspected, plan to confirm"
        PLANNED = "planned", "Planned"
        RUNNING = "running", "Moving"
        DONE = "done", "Moved"
        ROLLED_BACK = "rolled_back", "Rolled back, the VM serves"
        FAILED = "failed", "Failed, needs ops"
        CANCELLED = "cancelled", "Cancelled"

    # The run can be started (again) from these.
    RUNNABLE = (State.PLANNED, State.ROLLED_BACK)
    # Nothing more happens to these.
    FINISHED = (State.DONE, State.CANCELLED)

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="relocations")
    name = models.CharField(max_length=60, help_text="What the VM is called, for people")
    address = models.GenericIPAddressField(help_text="Where the portal reaches the VM over SSH")
    port = models.PositiveIntegerField(default=22)
    ssh_user = models.CharField(max_length=32, default="root")
    # What the VM offered when registered, "<type> <base64>", and the pinned key once confirmed.
    offered_key = models.CharField(max_length=1000)
    host_key = models.CharField(max_length=1000, blank=True)
    key_confirmed_at = models.DateTimeField(null=True, blank=True)
    key_installed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the portal's key was installed with a one-time password"
    )
    state = models.CharField(max_length=20, choices=State.choices, default=State.NEW)
    plan = models.JSONField(default=dict, blank=True)
    planned_at = models.DateTimeField(null=True, blank=True)
    app = models.ForeignKey(App, null=True, blank=True, on_delete=models.SET_NULL, related_name="relocations")
    host = models.ForeignKey(
        Host,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Where the app's files go",
    )
    # The VM's address the app keeps, held from plan to cutover so nothing else gets it.
    kept_address = models.ForeignKey(
        "network.IPAllocation", null=True, blank=True, on_delete=models.SET_NULL, related_name="relocations"
    )
    # What the cutover changed on the VM, so a rollback can put it back:
    # {"service_stopped": bool, "address_released": bool, "dev": "eth0", "prefixlen": 16, "mac": ...}
    cutover = models.JSONField(default=dict, blank=True)
    attempt = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.address})"

    @property
    def key_pinned(self) -> bool:
        return bool(self.host_key)

    @property
    def latest_inspection(self) -> Inspection | None:
        return self.inspections.order_by("-created_at", "-id").first()

    @property
    def latest_report(self) -> dict[str, Any]:
        """What the last inspection that got through found ({} if none did): a later failed
        attempt (the VM unreachable for a moment) does not undo what was seen."""
        inspection = self.inspections.exclude(report={}).order_by("-created_at", "-id").first()
        return inspection.report if inspection is not None else {}


class Inspection(models.Model):
    """One look at the VM over SSH; kept, so the plan can be read against what was seen."""

    relocation = models.ForeignKey(Relocation, on_delete=models.CASCADE, related_name="inspections")
    report = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"inspection of {self.relocation.name} at {self.created_at:%Y-%m-%d %H:%M}"


class Step(models.Model):
    """One step of one run, with its progress (bytes for the copy, a count or nothing for others)."""

    class Name(models.TextChoices):
        COPY = "copy", "Copy the app's files"
        CREATE = "create", "Create and start the instance"
        HEALTH = "health", "Health check"
        CUTOVER = "cutover", "Cut over"
        VERIFY = "verify", "Verify"
        ROLLBACK = "rollback", "Roll back to the VM"

    class State(models.TextChoices):
        PENDING = "pending", "Waiting"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Not needed"

    ORDER = [Name.COPY, Name.CREATE, Name.HEALTH, Name.CUTOVER, Name.VERIFY]

    relocation = models.ForeignKey(Relocation, on_delete=models.CASCADE, related_name="steps")
    attempt = models.PositiveIntegerField()
    name = models.CharField(max_length=20, choices=Name.choices)
    position = models.PositiveIntegerField()
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    done = models.PositiveBigIntegerField(default=0)
    total = models.PositiveBigIntegerField(default=0)
    detail = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["relocation", "attempt", "position"]
        constraints = [
            models.UniqueConstraint(fields=["relocation", "attempt", "name"], name="one_step_per_run")
        ]

    def __str__(self) -> str:
        return f"{self.relocation.name} run {self.attempt}: {self.name} {self.state}"

    @property
    def percent(self) -> int:
        if self.state in (self.State.DONE, self.State.SKIPPED):
            return 100
        if not self.total:
            return 0
        return min(100, int(self.done * 100 / self.total))

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


# Work for a worker (apps.relocations.runner): an inspection asked for, and a run (or the
# rollback of one) under way. A lost worker's run is taken over: the steps it finished are kept,
# a cutover it was in the middle of is rolled back.
RELOCATION_INSPECT = jobs.register(
    jobs.Kind(
        "relocation inspection",
        Relocation,
        task="relocations.inspect",
        active=Q(state=Relocation.State.INSPECTING),
    )
)
RELOCATION_RUN = jobs.register(
    jobs.Kind("relocation", Relocation, task="relocations.run", active=Q(state=Relocation.State.RUNNING))
)
