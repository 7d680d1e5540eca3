"""Bring actual state to desired state: containers killed behind the portal's back, or gone
with a restarted daemon, come back; containers with Slipway labels that no row explains, and
addresses in use that the database does not know (apps.instances.address_audit), are reported as
findings. Apps with an operation under way are left to it. Long work whose worker was lost, or
that never reached one, is sent again (portal.jobs)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone

from apps.applications.models import App
from apps.hosts import gateway
from apps.hosts.models import Host
from apps.hosts.transport import MANAGED_LABEL, ContainerState, HostError
from apps.instances.address_audit import AddressReport, addresses_audit
from apps.instances.models import Finding, Instance, Operation
from apps.instances.services import operation_create, operations_requeue_stale
from portal import jobs

log = logging.getLogger(__name__)


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


def _listing(host: Host) -> tuple[Host, list[ContainerState] | None, str]:
    try:
        return host, gateway.containers_list(host, f"{MANAGED_LABEL}=1"), ""
    except HostError as exc:
        return host, None, str(exc)


def reconcile() -> Report:
    report = Report(
        requeued=operations_requeue_stale(
            settings.OPERATION_REQUEUE_AFTER,
            settings.OPERATION_STALE_AFTER,
            silent_for_s=settings.OPERATION_HEARTBEAT_LOST,
        ),
        jobs_resent=jobs.resend_lost(),
    )
    hosts = list(Host.objects.exclude(host_key="").exclude(state=Host.State.PENDING))
    busy_apps = set(
        Operation.objects.filter(status__in=[Operation.Status.QUEUED, Operation.Status.RUNNING])
        .exclude(app=None)
        .values_list("app_id", flat=True)
    )
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(hosts)))) as pool:
        listings = list(pool.map(_listing, hosts))
    now = timezone.now()
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
            reason = _needs_repair(instance, container)
            if reason:
                report.repaired.setdefault(instance.app.slug, []).append(reason)
            elif container is not None:
                _sync(instance, container)
        for name, container in by_name.items():
            if name in expected:
                continue
            report.unknown.append(f"{host.name}: {name}")
            detail = f"labels {container.labels.get('io.slipway.app', '?')}/{container.labels.get('io.slipway.slot', '?')}, status {container.status}"
            Finding.open(host, Finding.Kind.UNKNOWN_CONTAINER, name, detail)
        # Findings for containers that are gone now are resolved.
        Finding.objects.filter(host=host, resolved_at=None, kind=Finding.Kind.UNKNOWN_CONTAINER).exclude(
            subject__in=list(by_name)
        ).update(resolved_at=now)
    report.addresses = addresses_audit(busy_apps)
    for slug, reasons in report.repaired.items():
        app = App.objects.get(slug=slug)
        operation_create(app=app, kind=Operation.Kind.RECONCILE, summary="; ".join(reasons)[:300])
    if report.repaired or report.unknown or report.addresses.foreign or report.addresses.idle:
        log.info(
            "reconcile: repaired %s, unknown %s, foreign addresses %s, idle addresses %s",
            report.repaired,
            report.unknown,
            report.addresses.foreign,
            report.addresses.idle,
        )
    return report


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


def _needs_repair(instance: Instance, container: ContainerState | None) -> str:
    name = instance.container_name
    if instance.desired_state == Instance.Desired.REMOVED:
        return f"{name} should be removed" if container else ""
    if container is None:
        return f"{name} was missing; re-create"
    if instance.desired_state == Instance.Desired.RUNNING and not container.running:
        return f"{name} was {container.status}; start"
    if instance.desired_state == Instance.Desired.STOPPED and container.running:
        return f"{name} was running; stop"
    return ""
