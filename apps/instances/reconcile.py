"""Bring actual state to desired state: containers killed behind the portal's back, or gone
with a restarted daemon, come back; containers with Slipway labels that no row explains, and
addresses in use that the database does not know (apps.instances.address_audit), are reported as
findings. Apps with an operation under way are left to it. Long work whose worker was lost, or
that never reached one, is sent again (portal.jobs).

When the fleet shows that it moved on past the database (apps.instances.ahead: restored from a
backup), the reconcile reports instead of acting wherever acting could harm an instance that
serves: the apps concerned are left as they are, their lost operations are failed rather than
run again, other long work is not sent again, and elsewhere only containers that exist are
started; every repair not made is a finding (docs/backup.md)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone

from apps.applications.models import App
from apps.audit.context import acting
from apps.audit.models import Source
from apps.hosts import gateway
from apps.hosts.models import Host
from apps.hosts.transport import MANAGED_LABEL, ContainerState, HostError
from apps.instances import ahead
from apps.instances.address_audit import AddressReport, addresses_audit
from apps.instances.models import Finding, Instance, Operation
from apps.instances.services import (
    operation_create,
    operations_hold_stale,
    operations_requeue_stale,
)
from portal import jobs

log = logging.getLogger(__name__)

# The findings about containers, resolved once a sweep of their host no longer sees them.
CONTAINER_FINDINGS = (
    Finding.Kind.UNKNOWN_CONTAINER,
    Finding.Kind.NEWER_CONTAINER,
    Finding.Kind.ELSEWHERE,
    Finding.Kind.HELD,
)
START, CREATE, STOP, REMOVE = "start", "create", "stop", "remove"


@dataclass
class Report:
    repaired: dict[str, list[str]] = field(default_factory=dict)  # app slug -> reasons
    unknown: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    requeued: int = 0
    # Other long work (drains, relocations, publishes) sent again, by kind: ids.
    jobs_resent: dict[str, list[int]] = field(default_factory=dict)
    addresses: AddressReport = field(default_factory=AddressReport)
    # Containers newer than the database, or where it does not place them ("host: name").
    ahead: list[str] = field(default_factory=list)
    # Repairs not made because of them ("host: reason").
    held: list[str] = field(default_factory=list)
    # Lost operations failed rather than run again on the older record; long work not sent.
    operations_held: list[int] = field(default_factory=list)
    jobs_held: bool = False


def _listing(host: Host) -> tuple[Host, list[ContainerState] | None, str]:
    try:
        return host, gateway.containers_list(host, f"{MANAGED_LABEL}=1"), ""
    except HostError as exc:
        return host, None, str(exc)


def _active_apps() -> set[int]:
    return set(
        Operation.objects.filter(status__in=[Operation.Status.QUEUED, Operation.Status.RUNNING])
        .exclude(app=None)
        .values_list("app_id", flat=True)
    )


def reconcile() -> Report:
    # Each change it makes (an instance started again, an operation sent again) is an audit row
    # saying the reconcile made it.
    with acting(Source.RECONCILE):
        return _reconcile()


def _reconcile() -> Report:
    hosts = list(Host.objects.exclude(host_key="").exclude(state=Host.State.PENDING))
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(hosts)))) as pool:
        listings = list(pool.map(_listing, hosts))
    thresholds = (
        settings.OPERATION_REQUEUE_AFTER,
        settings.OPERATION_STALE_AFTER,
        settings.OPERATION_HEARTBEAT_LOST,
    )
    # Read after the listings: every row a listed container was made for is in the database.
    # Apps with an operation, even one whose worker was lost, are checked only for ids from
    # after the database's last write: a move cut short leaves its container on the old host.
    working = _active_apps()
    signs = ahead.signs([(h, c) for h, c, _ in listings if c is not None], left_alone=working)
    ahead_apps = {sign.app_id for sign in signs if sign.app_id is not None}
    report = Report(operations_held=operations_hold_stale(ahead_apps, *thresholds) if ahead_apps else [])
    report.requeued = operations_requeue_stale(*thresholds)
    if ahead_apps:
        # A drain, move or publish from before the backup would work from the older record.
        report.jobs_held = True
    else:
        report.jobs_resent = jobs.resend_lost()
    busy_apps = _active_apps()
    seen: set[tuple[int, str, str]] = set()

    def note(host: Host, kind: str, subject: str, detail: str) -> None:
        Finding.open(host, kind, subject, detail)
        seen.add((host.pk, kind, subject))

    signed = set()
    for sign in signs:
        note(sign.host, sign.kind, sign.name, sign.detail)
        report.ahead.append(f"{sign.host.name}: {sign.name}")
        signed.add((sign.host.pk, sign.name))
    elsewhere = {sign.name: sign.host for sign in signs if sign.kind == Finding.Kind.ELSEWHERE}
    repairs: dict[int, list[Instance]] = {}
    for host, containers, error in listings:
        if containers is None:
            report.unreachable.append(f"{host.name}: {error}")
            continue
        by_name = {c.name: c for c in containers}
        expected = set()
        for instance in Instance.objects.filter(host=host).select_related("app__base_image", "image"):
            expected.add(instance.container_name)
            if instance.app_id in busy_apps:
                continue
            container = by_name.get(instance.container_name)
            action, reason = _needs_repair(instance, container)
            if instance.app_id in ahead_apps:
                if action:
                    there = elsewhere.get(instance.container_name)
                    why = (
                        f"it runs on {there.name}"
                        if there
                        else "the app's containers are newer than the database"
                    )
                    _hold(host, instance, reason, why, note, report)
                continue
            if container is not None and container.status == "restarting":
                _mark_failed(host, instance, report)
                continue
            if instance.state == Instance.State.FAILED:
                # The app's own failure waits for its owner (restart, redeploy, scale); retrying
                # it every sweep would only crash it again.
                if container is not None and container.running:
                    Instance.objects.filter(pk=instance.pk).update(
                        state=Instance.State.RUNNING, last_error=""
                    )
                continue
            if action and ahead_apps and action != START:
                # Only starting a container that is there cannot harm one that serves.
                why = "containers elsewhere in the fleet are newer than the database"
                _hold(host, instance, reason, why, note, report)
            elif action:
                report.repaired.setdefault(instance.app.slug, []).append(reason)
                repairs.setdefault(instance.app_id, []).append(instance)
            elif container is not None:
                _sync(instance, container)
        for name, container in by_name.items():
            if name in expected or (host.pk, name) in signed:
                continue
            report.unknown.append(f"{host.name}: {name}")
            detail = f"labels {container.labels.get('io.slipway.app', '?')}/{container.labels.get('io.slipway.slot', '?')}, status {container.status}"
            note(host, Finding.Kind.UNKNOWN_CONTAINER, name, detail)
    # Findings about containers a sweep of their host no longer sees are resolved.
    listed = [host.pk for host, containers, _ in listings if containers is not None]
    still_open = Finding.objects.filter(host__in=listed, kind__in=CONTAINER_FINDINGS, resolved_at=None)
    gone = [
        f.pk
        for f in still_open.only("host_id", "kind", "subject")
        if (f.host_id, f.kind, f.subject) not in seen
    ]
    Finding.objects.filter(pk__in=gone).update(resolved_at=timezone.now())
    report.addresses = addresses_audit(busy_apps | ahead_apps)
    for slug, reasons in report.repaired.items():
        app = App.objects.get(slug=slug)
        operation_create(
            app=app,
            kind=Operation.Kind.RECONCILE,
            summary="; ".join(reasons)[:300],
            # Only these: converging the whole app would also recreate instances that serve.
            params={"instances": [i.pk for i in repairs[app.pk]]},
        )
    if report.repaired or report.unknown or report.addresses.foreign or report.addresses.idle:
        log.info(
            "reconcile: repaired %s, unknown %s, foreign addresses %s, idle addresses %s",
            report.repaired,
            report.unknown,
            report.addresses.foreign,
            report.addresses.idle,
        )
    if report.ahead:
        log.warning(
            "reconcile: the fleet is newer than the database (restored from a backup?): %s; held: %s; "
            "operations failed rather than run again: %s; long work not sent again: %s",
            report.ahead,
            report.held,
            report.operations_held,
            report.jobs_held,
        )
    return report


def _hold(
    host: Host,
    instance: Instance,
    reason: str,
    why: str,
    note: Callable[[Host, str, str, str], None],
    report: Report,
) -> None:
    report.held.append(f"{host.name}: {reason}")
    note(host, Finding.Kind.HELD, instance.container_name, f"{reason}: not done, as {why}.")


def _mark_failed(host: Host, instance: Instance, report: Report) -> None:
    try:
        why = gateway.container_why(host, instance.container_name)
    except HostError as exc:
        why = str(exc)
    message = f"{instance.container_name} {why}"
    report.failed.append(message)
    if instance.state != Instance.State.FAILED or instance.last_error != message:
        Instance.objects.filter(pk=instance.pk).update(state=Instance.State.FAILED, last_error=message)


def _sync(instance: Instance, container: ContainerState) -> None:
    """Record what Docker changed on its own, e.g. a new host port after the daemon restarted."""
    host_port = container.published(instance.effective_port)
    state = Instance.State.RUNNING if container.running else Instance.State.STOPPED
    if (instance.container_id, instance.host_port, instance.state) != (container.id, host_port, state):
        Instance.objects.filter(pk=instance.pk).update(
            container_id=container.id, host_port=host_port, state=state
        )


def _needs_repair(instance: Instance, container: ContainerState | None) -> tuple[str, str]:
    """What the instance needs (START, CREATE, STOP, REMOVE or ""), and why, in words."""
    name = instance.container_name
    if instance.desired_state == Instance.Desired.REMOVED:
        return (REMOVE, f"{name} should be removed") if container else ("", "")
    if container is None:
        return CREATE, f"{name} was missing; re-create"
    if instance.desired_state == Instance.Desired.RUNNING and not container.running:
        return START, f"{name} was {container.status}; start"
    if instance.desired_state == Instance.Desired.STOPPED and container.running:
        return STOP, f"{name} was running; stop"
    return "", ""
