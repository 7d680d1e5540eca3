"""Prepare: from a registered host with a confirmed key to one that takes instances, in steps
ops watch on the host page. Every step is idempotent, so preparing again (or a worker taking
over a lost run) redoes only what is still missing:

1. install the agent (the portal's build, over SFTP; kept if current),
2. run the doctor (the host's checks, each with its remedy),
3. create the Docker network of each pool the host serves, if one is missing,
4. fix the network settings (IP forwarding off, bridge MACs pinned), if they fail,
5. start LXCFS (installing Debian's package if the host has none), if it does not serve,
6. dockerd's settings (log rotation, live-restore): written, reloaded and dockerd restarted only
   when ops confirmed the restart (`restart_dockerd`); otherwise the step says what it would do,
7. load every published base image version the host lacks,
8. check again: ready if every required check passes, else what ops still have to do.

What needs the host rebooted (swap accounting) or another package (Docker itself) stays a
remedy on the checklist.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts import permissions
from apps.applications.models import BaseImage, BuildState
from apps.fleet.models import PREPARE, Preparation
from apps.hosts import agent, gateway
from apps.hosts import services as host_services
from apps.hosts.models import Host, HostEvent
from apps.hosts.transport import HostError
from apps.images import publish
from apps.network import services as network_services
from portal import jobs

log = logging.getLogger(__name__)

STEPS = [
    "install the agent",
    "run the doctor",
    "create pool networks",
    "fix network settings",
    "start LXCFS",
    "dockerd settings",
    "load base images",
    "check again",
]


def host_prepare(*, user: Any, host: Host, restart_dockerd: bool = False) -> Preparation:
    """Start preparing the host (ops only); one preparation per host at a time. With
    `restart_dockerd` ops confirm that dockerd may be restarted to take its settings."""
    permissions.require_ops(user, "prepare hosts")
    if not host.host_key:
        raise ValidationError(f"{host.name}'s key is not confirmed yet: confirm its fingerprint first.")
    with transaction.atomic():
        preparation = _new(host, user, restart_dockerd=restart_dockerd)
        jobs.start(PREPARE, preparation.pk)
    return preparation


def _new(host: Host, user: Any, *, restart_dockerd: bool = False) -> Preparation:
    """The row, every step waiting; refused while another runs on the host."""
    steps = [{"name": name, "state": "waiting", "detail": ""} for name in STEPS]
    try:
        with transaction.atomic():
            return Preparation.objects.create(
                host=host, started_by=user, steps=steps, restart_dockerd=restart_dockerd
            )
    except IntegrityError:
        raise ValidationError(f"{host.name} is being prepared already.") from None


def prepare_now(host: Host, user: Any = None) -> Preparation:
    """Prepare the host in this process and return the finished row: for the lab's own set-up
    (`lab up`, the tests' fixtures), which does what ops would press, with no worker yet."""
    preparation = _new(host, user)
    run(preparation.pk)
    preparation.refresh_from_db()
    return preparation


def run(preparation_id: int) -> None:
    if not jobs.claim(PREPARE, preparation_id):
        return
    preparation = Preparation.objects.select_related("host", "started_by").get(pk=preparation_id)
    with jobs.Heartbeat.of(PREPARE, preparation_id):
        try:
            _run(preparation)
        except Exception as exc:  # a bug must not leave the host "Preparing" for ever
            log.exception("preparing %s crashed", preparation.host.name)
            _finish(preparation, Preparation.State.FAILED, f"Prepare stopped on an unexpected error: {exc}")


def _step(preparation: Preparation, index: int, state: str, detail: str = "") -> None:
    preparation.steps[index].update(state=state, detail=detail[:2000])
    Preparation.objects.filter(pk=preparation.pk).update(steps=preparation.steps)


def _run(preparation: Preparation) -> None:
    host = preparation.host
    user = preparation.started_by

    def install() -> tuple[str, str]:
        info, installed = host_services.agent_ensure(host, user)
        where = f"in {gateway.agent_bundle.root()}/current"
        if installed:
            return "done", f"{installed}, {where}"
        return "skipped", f"hostagent {info.get('agent_version')} ({agent.bundle().name}) is current, {where}"

    def doctor() -> tuple[str, str]:
        nonlocal host
        host = host_services.host_probe(host=host)
        if host.state == Host.State.UNREACHABLE and not host.checks:
            raise HostError(host.last_error or "the probe failed")
        failing = [c["name"] for c in host.checks if not c.get("ok")]
        return (
            "done",
            f"{len(host.checks)} checks, failing: {', '.join(failing)}"
            if failing
            else f"all {len(host.checks)} checks pass",
        )

    def networks() -> tuple[str, str]:
        if "network" not in host.failing_fixes():
            return "skipped", "every pool's network is there"
        done = network_services.host_networks_ensure(host=host, user=user)
        return "done", "; ".join(done)

    def fix_network() -> tuple[str, str]:
        if "fix-network" not in host.failing_fixes():
            return "skipped", "IP forwarding and bridge MACs are right"
        return "done", host_services.network_fix(host=host, user=user)

    def lxcfs() -> tuple[str, str]:
        if "lxcfs" not in host.failing_fixes():
            return "skipped", "LXCFS serves its files"
        return "done", host_services.lxcfs_start(host=host, user=user)

    def dockerd() -> tuple[str, str]:
        if "daemon-json" not in host.failing_fixes():
            return "skipped", "log rotation and live-restore are on"
        if not preparation.restart_dockerd:
            plan = host_services.docker_settings(host=host, user=user, restart=False)
            return "skipped", f"waits for ops to confirm a dockerd restart (Apply dockerd settings): {plan}"
        return "done", host_services.docker_settings(host=host, user=user, restart=True)

    def images() -> tuple[str, str]:
        said = publish.load_missing(host)
        state = "failed" if not all(ok for _, ok in said) else "done" if said else "skipped"
        return state, "; ".join(line for line, _ in said) or "it has every published version"

    def again() -> tuple[str, str]:
        nonlocal host
        host = host_services.host_probe(host=host)
        left = [
            f"{c['name']}: {c.get('remedy') or c['detail']}"
            for c in host.checks
            if not c.get("ok") and c.get("required", True)
        ]
        return ("done", "ready: every required check passes") if not left else ("failed", "; ".join(left))

    actions: list[tuple[str, Callable[[], tuple[str, str]]]] = [
        ("install the agent", install),
        ("run the doctor", doctor),
        ("create pool networks", networks),
        ("fix network settings", fix_network),
        ("start LXCFS", lxcfs),
        ("dockerd settings", dockerd),
        ("load base images", images),
        ("check again", again),
    ]
    problems = []
    for index, (name, action) in enumerate(actions):
        _step(preparation, index, "running")
        try:
            state, detail = action()
        except (HostError, ValidationError) as exc:
            message = " ".join(getattr(exc, "messages", [str(exc)]))
            _step(preparation, index, "failed", message)
            log.warning("preparing %s: %s failed: %s", host.name, name, message)
            if index < 2:  # no agent or no checks: nothing after this can work
                _finish(preparation, Preparation.State.FAILED, f"{name}: {message}")
                return
            problems.append(name)
            continue
        _step(preparation, index, state, detail)
        if state == "failed":
            problems.append(name)
    state = Preparation.State.READY if not problems else Preparation.State.NEEDS_OPS
    _finish(preparation, state, "" if not problems else "Still to do: " + ", ".join(problems))


def _finish(preparation: Preparation, state: str, error: str) -> None:
    Preparation.objects.filter(pk=preparation.pk).update(state=state, error=error, finished_at=timezone.now())
    if not Host.objects.filter(pk=preparation.host_id).exists():
        return  # the host was deleted meanwhile: there is no history to write to
    HostEvent.objects.create(
        host=preparation.host,
        user=preparation.started_by,
        action="prepared" if state == Preparation.State.READY else "prepare stopped",
        detail=error or "ready",
    )


# A host that lacks something Prepare makes (a pool network, forwarding off, a base image version)
# is prepared by the beat, at most this often per host: a fix that does not hold must not loop.
AUTO_EVERY_S = 600


def wanting() -> list[Host]:
    """Active hosts that Prepare would change: a failing check it fixes, or a published version
    (with a recipe) they lack."""

    hosts = list(Host.objects.filter(state=Host.State.ACTIVE).exclude(host_key=""))
    published = list(
        BaseImage.objects.filter(state=BuildState.PUBLISHED).exclude(recipe="").prefetch_related("hosts")
    )
    out = []
    for host in hosts:
        # Not daemon-json: restarting dockerd waits for ops' word.
        fixable = bool(host.failing_fixes() & {"network", "fix-network", "lxcfs"})
        lacking = any(host not in image.hosts.all() for image in published)
        if fixable or lacking:
            out.append(host)
    return out


def prepare_wanting() -> list[int]:
    """The beat's part: start Prepare on each host that wants it and had none lately."""
    since = timezone.now() - timedelta(seconds=AUTO_EVERY_S)
    started = []
    for host in wanting():
        if host.preparations.filter(created_at__gte=since).exists():
            continue
        try:
            with transaction.atomic():
                preparation = _new(host, None)
                jobs.start(PREPARE, preparation.pk)
        except ValidationError:
            continue  # one is running
        HostEvent.objects.create(
            host=host, action="prepare started", detail="by the portal: something Prepare fixes was missing"
        )
        started.append(preparation.pk)
    return started
