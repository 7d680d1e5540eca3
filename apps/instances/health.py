"""The app's health check, run from the worker against an instance the way its callers reach it:
its static address on the public network (or the host's published port)."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from apps.applications.models import App, HealthCheck, Release
from apps.instances.models import Instance

# One attempt never waits longer than this, so a slow answer does not eat the whole timeout.
ATTEMPT_TIMEOUT = 2.0
POLL_INTERVAL = 0.1


@dataclass(frozen=True)
class Check:
    kind: str
    path: str
    timeout: float

    @classmethod
    def of(cls, app: App | Release) -> Check:
        """The check of an app as it is configured, or of one of its releases (a deploy judges
        each new instance by the check of the release it deploys)."""
        return cls(app.health_check, app.health_path or "/", float(app.health_timeout))

    def describe(self, address: str, port: int | None) -> str:
        if self.kind == HealthCheck.HTTP:
            return f"GET http://{address}:{port}{self.path}"
        if self.kind == HealthCheck.TCP:
            return f"a TCP connection to {address}:{port}"
        return "no check"


def target(instance: Instance) -> tuple[str, int | None]:
    """Where callers reach the instance: its static address and the app's port, or the host's
    address and the published port."""
    if instance.address:
        return str(instance.address), instance.effective_port
    return instance.host.address, instance.host_port


def checkable(instance: Instance, check: Check) -> bool:
    return check.kind != HealthCheck.NONE and bool(target(instance)[1])


def probe(address: str, port: int, check: Check, timeout: float = ATTEMPT_TIMEOUT) -> str:
    """One attempt: "" when healthy, otherwise what went wrong."""
    try:
        if check.kind == HealthCheck.HTTP:
            conn = http.client.HTTPConnection(address, port, timeout=timeout)
            try:
                conn.request(
                    "GET", check.path, headers={"Connection": "close", "User-Agent": "slipway-health"}
                )
                status = conn.getresponse().status
            finally:
                conn.close()
            return "" if 200 <= status < 400 else f"answered HTTP {status}"
        with socket.create_connection((address, port), timeout=timeout):
            return ""
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def wait_healthy(
    instance: Instance,
    check: Check | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Poll until the instance passes its app's check or the check's timeout passes: "" when
    healthy, otherwise a sentence for the operation's log saying what was tried and what came."""
    check = check or Check.of(instance.app)
    if check.kind == HealthCheck.NONE:
        return ""
    address, port = target(instance)
    if not port:
        return ""  # nothing listens for callers (a worker app): running is all there is to check
    deadline = clock() + check.timeout
    last = ""
    while True:
        last = probe(address, port, check, min(ATTEMPT_TIMEOUT, max(0.2, deadline - clock())))
        if not last or clock() >= deadline:
            break
        sleep(POLL_INTERVAL)
    if not last:
        return ""
    return (
        f"{instance.container_name} did not pass its health check within {check.timeout:g} s: "
        f"{check.describe(address, port)} {last if last.startswith('answered') else 'failed (' + last + ')'}"
    )
