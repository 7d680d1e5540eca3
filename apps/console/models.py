"""Commands run in running instances, and terminal sessions: every one is an audit row.

Names and numbers are copied onto the row (app, instance, host, user), so the audit outlives
what it talks about."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from apps.applications.models import App
from apps.applications.validators import validate_argv
from apps.instances.models import Instance


class ExecSession(models.Model):
    class Kind(models.TextChoices):
        COMMAND = "command", "Command"
        NAMED = "named", "Named command"
        TERMINAL = "terminal", "Terminal"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    username = models.CharField(max_length=150)
    app = models.ForeignKey(App, null=True, on_delete=models.SET_NULL, related_name="exec_sessions")
    app_slug = models.CharField(max_length=40)
    team_id_copy = models.IntegerField(null=True, help_text="The app's team, for leads' audit after deletion")
    instance = models.ForeignKey(Instance, null=True, on_delete=models.SET_NULL, related_name="exec_sessions")
    instance_name = models.CharField(max_length=80)
    host_name = models.CharField(max_length=100)
    argv = models.JSONField(default=list, blank=True, help_text="The command as a list; empty for a terminal")
    name = models.CharField(max_length=40, blank=True, help_text="The named command run, if any")
    run_as = models.CharField(max_length=64, blank=True)
    workdir = models.CharField(max_length=255, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    timed_out = models.BooleanField(default=False)
    truncated = models.BooleanField(default=False)
    bytes_out = models.BigIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["user", "started_at"]), models.Index(fields=["app", "-started_at"])]

    def __str__(self) -> str:
        return f"{self.username} {self.kind} in {self.instance_name}"

    @property
    def duration(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


class NamedCommand(models.Model):
    """A command developers run with one click ("reload", "clear cache"), set by ops or the
    app's lead."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="named_commands")
    name = models.CharField(
        max_length=40,
        validators=[RegexValidator(r"^[a-z][a-z0-9-]{0,39}$", "Lowercase letters, digits and '-'.")],
    )
    argv = models.JSONField(
        validators=[validate_argv], help_text='The command as a list, e.g. ["kill", "-HUP", "1"]'
    )
    description = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["app", "name"]
        constraints = [models.UniqueConstraint(fields=["app", "name"], name="one_command_per_name")]

    def __str__(self) -> str:
        return f"{self.app.slug}: {self.name}"
