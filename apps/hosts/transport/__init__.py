"""How the portal talks to a host. Only the modules in this package import `paramiko` or
`docker`; everything else uses these functions and the errors below."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass


def fingerprint(host_key: str) -> str:
    """OpenSSH-style SHA256 fingerprint of "<type> <base64>"."""
    try:
        blob = base64.b64decode(host_key.split()[1], validate=True)
    except (IndexError, ValueError):
        raise ValueError("not an SSH public key: expected '<type> <base64>'") from None
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


# An OpenSSH SHA256 fingerprint: 32 bytes in base64 without its padding (43 characters).
_SHA256 = re.compile(r"SHA256:([A-Za-z0-9+/]{43})(?![A-Za-z0-9+/])")


def fingerprint_in(text: str) -> str | None:
    """The SHA256 fingerprint in what a person pasted: the fingerprint alone, or the whole line
    `ssh-keygen -lf <key file>` prints ("256 SHA256:… root@host (ED25519)"). None if there is
    none (an MD5 one, a typo)."""
    match = _SHA256.search(text or "")
    return f"SHA256:{match.group(1)}" if match else None


NOT_A_FINGERPRINT = (
    "That is not a SHA256 fingerprint. Paste the SHA256:… value (43 characters after the colon), "
    "or the whole line “ssh-keygen -lf {key_file}” prints there, e.g. “256 SHA256:… root@host (ED25519)”."
)


class HostError(Exception):
    """A problem reaching or using a host. The message is safe to show to users."""


class HostUnreachable(HostError):
    pass


class HostKeyError(HostError):
    """The host's SSH key is not pinned, or differs from the pinned one: nothing may run."""


class HostKeyUnknown(HostKeyError):
    pass


class HostKeyChanged(HostKeyError):
    pass


class CommandTimeout(HostError):
    pass


class ContainerFailed(HostError):
    """Docker refused the container or it died at once: the app's fault, not the host's."""


class AddressInUse(ContainerFailed):
    """The container's static address turned out to be in use on the segment before it started."""

    def __init__(self, address: str, held_by: str) -> None:
        super().__init__(f"{address} is in use on the network ({held_by})")
        self.address = address
        self.held_by = held_by


class CommandFailed(HostError):
    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Endpoint:
    """Everything needed to reach a host over SSH; hashable, so it keys connection caches."""

    address: str
    port: int
    user: str
    # The pinned public key, "<type> <base64>"; empty means not yet confirmed.
    host_key: str

    def __str__(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    duration: float
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class ContainerSpec:
    """What a container should be. `digest` goes into a label, so a re-run can tell whether the
    container it finds under `name` is the one it would make, and adopt it."""

    name: str
    image: str
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...]
    memory_mb: int
    nano_cpus: int
    # (source on the host, target in the container); sources are computed by the portal.
    binds: tuple[tuple[str, str], ...] = ()
    port: int | None = None
    publish_address: str = ""
    running: bool = True
    # A static address on a Docker network bridged onto the public segment (no publishing).
    network: str = ""
    ipv4: str = ""
    # Read-only binds of files the host serves (LXCFS's /proc files), after `binds`.
    ro_binds: tuple[tuple[str, str], ...] = ()
    # The app's working directory in the container ("" for the image's own).
    workdir: str = ""
    # Bounds left out of the digest, like memory and CPU: the processes limit changes live, and
    # the log rotation applies to containers made from then on (Docker keeps a container's log
    # settings for its life). 0 / "" leave them to the host's daemon.
    pids_limit: int = 0
    log_max_size: str = ""
    log_max_file: int = 0

    @property
    def digest(self) -> str:
        parts = [
            self.image,
            repr(self.command),
            repr(self.env),
            repr(self.binds),
            # Memory and CPU are left out: they change live (docker update), never by recreating.
            str(self.port),
            self.publish_address,
            self.network,
            self.ipv4,
            repr(tuple(item for item in self.labels if not _left_out(item[0]))),
        ]
        if self.ro_binds:  # only then, so containers made before LXCFS keep their digest
            parts.append(repr(self.ro_binds))
        if self.workdir:  # likewise: only apps that set one get a new digest
            parts.append("workdir=" + self.workdir)
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


SPEC_LABEL = "io.slipway.spec"
MANAGED_LABEL = "io.slipway.managed"
# Labels that say what a container was made from, not what it is (the release it was made
# for): left out of the digest, so a container is adopted whatever stamps it carries, and the
# stamps of containers made before them are never a reason to recreate one.
STAMP_PREFIX = "io.slipway.stamp."


def _left_out(label: str) -> bool:
    return label == SPEC_LABEL or label.startswith(STAMP_PREFIX)


@dataclass(frozen=True)
class ContainerState:
    id: str
    name: str
    status: str  # Docker's: created, running, exited, paused, restarting, dead
    labels: dict[str, str]
    host_port: int | None = None
    started_at: str = ""
    error: str = ""
    exit_code: int | None = None
    # Published TCP ports: (container port, host port).
    ports: tuple[tuple[int, int], ...] = ()
    pid: int = 0
    # How often Docker's restart policy has restarted it (inspect only).
    restart_count: int = 0
    # Whether the call that returned this state created or started the container.
    acted: bool = False

    @property
    def running(self) -> bool:
        return self.status == "running"

    def published(self, port: int | None) -> int | None:
        return next((host for inner, host in self.ports if inner == port), None) if port else None
