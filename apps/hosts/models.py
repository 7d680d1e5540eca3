from __future__ import annotations

import ipaddress
import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from apps.hosts import agent
from apps.hosts.transport import Endpoint, fingerprint

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"
)


def validate_address(value: str) -> None:
    try:
        ipaddress.ip_address(value)
        return
    except ValueError:
        pass
    if not _HOSTNAME.match(value) or value.replace(".", "").isdigit():
        raise ValidationError(
            f"{value!r} is neither an IP address nor a host name (letters, digits, '-' and '.')."
        )


def validate_absolute_path(value: str) -> None:
    if not value.startswith("/") or "\x00" in value or "/../" in f"{value}/" or "/./" in f"{value}/":
        raise ValidationError(f"{value!r}: use an absolute path without '.' or '..' components.")


# Host directories an app volume must never sit in: each app's volume is <root>/<slug>, bound
# read-write into its containers, so a root here would hand them the host's system (or
# Docker's own socket and state).
HOST_SYSTEM_PATHS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/run",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/lib/lxcfs",
)


def validate_volume_root(value: str) -> None:
    validate_absolute_path(value)
    clean = value.rstrip("/") or "/"
    if (
        "//" in value
        or clean == "/"
        or any(clean == p or clean.startswith(p + "/") for p in HOST_SYSTEM_PATHS)
    ):
        raise ValidationError(
            f"{value!r} cannot hold app volumes: it is (or is inside) a system directory of the host. "
            "Use a directory of its own, e.g. /srv/slipway/volumes."
        )


DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"


def default_volume_root() -> str:
    return str(settings.HOST_VOLUME_ROOT)


class Host(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "Key not confirmed"
        ACTIVE = "active", "Active"
        DRAINING = "draining", "Draining"
        UNREACHABLE = "unreachable", "Unreachable"

    class Transport(models.TextChoices):
        SSH = "ssh", "Docker API over SSH"
        LOCAL = "local", "Local Docker socket"

    name = models.CharField(
        max_length=63,
        unique=True,
        validators=[
            RegexValidator(
                r"^[a-z][a-z0-9-]{0,62}$",
                "Use lowercase letters, digits and '-', starting with a letter (at most 63).",
            )
        ],
    )
    address = models.CharField(max_length=253, validators=[validate_address])
    ssh_port = models.PositiveIntegerField(
        default=22, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    ssh_user = models.CharField(
        max_length=32,
        default="root",
        validators=[RegexValidator(r"^[a-z_][a-z0-9_-]{0,31}$", "Not a valid Unix user name.")],
    )
    # The pinned key ("<type> <base64>"); nothing runs on the host until it is set.
    host_key = models.TextField(blank=True)
    # The key the host offered at registration or on the last re-fetch, awaiting confirmation.
    offered_host_key = models.TextField(blank=True)
    docker_transport = models.CharField(max_length=10, choices=Transport.choices, default=Transport.SSH)
    # The daemon's socket on the host (blank: /var/run/docker.sock). Over SSH the portal
    # opens channels straight to it; the local transport connects to it on this machine.
    docker_socket = models.CharField(max_length=200, blank=True, validators=[validate_absolute_path])
    volume_root = models.CharField(
        max_length=200, default=default_volume_root, validators=[validate_volume_root]
    )
    cpus = models.PositiveIntegerField(null=True, blank=True)
    memory_mb = models.PositiveIntegerField(null=True, blank=True)
    facts = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    last_seen = models.DateTimeField(null=True, blank=True)
    last_checked = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # The last metrics sweep that answered, and why the latest one did not (empty: it did).
    metrics_at = models.DateTimeField(null=True, blank=True)
    metrics_error = models.TextField(blank=True)
    # What the host's instances use, as the last two sweeps measured it (placement reads it):
    # {"t": unix time, "cpu_ns": total CPU time, "memory_mb": working set, "cpus": CPUs in use}.
    usage = models.JSONField(default=dict, blank=True)
    # Host checks (hostagent check, judged by the portal): [{"name", "ok", "detail"}].
    checks = models.JSONField(default=list, blank=True)
    checks_ok = models.BooleanField(default=False)
    # Ops may let a failing host take instances anyway, with a reason (audited).
    checks_override = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["address", "ssh_port"], name="one_host_per_address")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.docker_transport == self.Transport.LOCAL and not self.docker_socket:
            raise ValidationError({"docker_socket": "The local transport needs the daemon's socket path."})

    @property
    def agent_path(self) -> str:
        """Where the portal's agent is on the host (the same on every host)."""

        return f"{agent.root()}/current"

    @property
    def socket_path(self) -> str:
        return self.docker_socket or DEFAULT_DOCKER_SOCKET

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.address, self.ssh_port, self.ssh_user, self.host_key)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.host_key) if self.host_key else ""

    @property
    def offered_fingerprint(self) -> str:
        return fingerprint(self.offered_host_key) if self.offered_host_key else ""

    @property
    def takes_instances(self) -> bool:
        return self.state == self.State.ACTIVE and (self.checks_ok or bool(self.checks_override))

    def failing_fixes(self) -> set[str]:
        """The portal fixes (the doctor's `fix` names) that failing checks ask for."""
        return {c["fix"] for c in self.checks or [] if not c.get("ok") and c.get("fix")}

    @property
    def dockerd_settings_due(self) -> bool:
        """dockerd's settings (daemon.json) want writing, which takes a restart ops confirm."""
        return "daemon-json" in self.failing_fixes()

    @property
    def key_awaits_confirmation(self) -> bool:
        return bool(self.offered_host_key) and self.offered_host_key != self.host_key


class HostEvent(models.Model):
    """Audit of what ops did to a host: key pinned, network fixed, checks overridden."""

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="events")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    action = models.CharField(max_length=40)
    detail = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.host}: {self.action}"
