"""The reconcile's look at the public network: addresses in use on the hosts that the database
does not know, and allocations that no container holds.

Foreign addresses are held (an IPAllocation without an app) so they are never handed out, and
released when nothing holds or answers for them any more. Everything found is a Finding ops
see on the host page and in the admin.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from django.utils import timezone

from apps.hosts import gateway
from apps.hosts.models import Host
from apps.hosts.transport import HostError
from apps.instances.address_probe import holder_text, probe
from apps.instances.models import Finding, Instance
from apps.network.models import IPAllocation, IPPool
from apps.network.services import address_hold_foreign, address_release_foreign

# An allocation this young may not have its container yet (the operation is on its way).
IDLE_GRACE = timedelta(minutes=2)


@dataclass
class AddressReport:
    foreign: list[str] = field(default_factory=list)  # "address: who"
    idle: list[str] = field(default_factory=list)  # "address: app/slot, why"
    released: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # pools not fully seen: why


def _holders(host: Host, network: str) -> tuple[Host, dict[str, str] | None]:
    try:
        return host, dict(gateway.agent(host, "holders", network=network)["holders"])
    except (HostError, KeyError, TypeError):
        return host, None


def addresses_audit(busy_apps: Iterable[int] = ()) -> AddressReport:
    report = AddressReport()
    busy = set(busy_apps)
    for pool in IPPool.objects.prefetch_related("hosts"):
        hosts = [h for h in pool.hosts.all() if h.host_key and h.state != Host.State.PENDING]
        if hosts:
            _audit_pool(pool, hosts, busy, report)
    return report


def _audit_pool(pool: IPPool, hosts: list[Host], busy: set[int], report: AddressReport) -> None:
    now = timezone.now()
    net = pool.net
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(hosts)))) as threads:
        listings = list(threads.map(lambda h: _holders(h, pool.docker_network), hosts))
    seen: dict[str, tuple[Host, str]] = {}  # address -> (host, container)
    complete = True
    for host, holders in listings:
        if holders is None:
            complete = False
            report.unchecked.append(f"{pool.name}: {host.name} did not answer")
            continue
        for address, container in holders.items():
            try:
                if ipaddress.ip_address(address) in net:
                    seen[address] = (host, container)
            except ValueError:
                continue
    allocations = {a.address: a for a in IPAllocation.objects.filter(pool=pool).select_related("app")}
    instances = {
        (i.app_id, i.slot): i
        for i in Instance.objects.filter(app__ip_pool=pool).select_related("app", "host")
    }
    reported: dict[str, set[str]] = {Finding.Kind.FOREIGN_ADDRESS: set(), Finding.Kind.IDLE_ADDRESS: set()}

    for address, (host, container) in seen.items():
        allocation = allocations.get(address)
        held_by = f"container {container} on {host.name}"
        if allocation is None or allocation.foreign:
            address_hold_foreign(pool=pool, address=address, held_by=held_by)
        else:
            instance = instances.get((allocation.app_id, allocation.slot))  # type: ignore[arg-type]
            if allocation.app_id in busy or (
                instance is not None and instance.host_id == host.pk and instance.container_name == container
            ):
                continue
            held_by += f", while {address} is allocated to {allocation.app.slug}/{allocation.slot}"  # type: ignore[union-attr]
        Finding.open(host, Finding.Kind.FOREIGN_ADDRESS, address, held_by)
        reported[Finding.Kind.FOREIGN_ADDRESS].add(address)
        report.foreign.append(f"{address}: {held_by}")

    if complete:
        # Foreign addresses no container holds any more: free, unless something still answers ARP.
        # An address kept for a VM's move stays held while the move is planned, even if the VM is
        # down for a while: the cutover hands it to the app.
        kept = set(
            IPAllocation.objects.filter(pool=pool, relocations__isnull=False).values_list("pk", flat=True)
        )
        stale = [
            a for address, a in allocations.items() if a.foreign and address not in seen and a.pk not in kept
        ]
        if stale:
            _recheck_foreign(pool, hosts, stale, reported, report)
        for address, allocation in allocations.items():
            if allocation.foreign or address in seen or allocation.app_id in busy:
                continue
            if allocation.created_at > now - IDLE_GRACE:
                continue
            instance = instances.get((allocation.app_id, allocation.slot))  # type: ignore[arg-type]
            owner = f"{allocation.app.slug}/{allocation.slot}"  # type: ignore[union-attr]
            if instance is None:
                why = f"allocated to {owner}, which has no instance" + (
                    " (asked for by the owner, waiting for a scale-up)" if allocation.requested else ""
                )
            elif instance.desired_state == Instance.Desired.REMOVED:
                continue
            else:
                why = (
                    f"allocated to {owner}; no container on {instance.host.name} holds it ({instance.state})"
                )
            Finding.open(instance.host if instance else None, Finding.Kind.IDLE_ADDRESS, address, why)
            reported[Finding.Kind.IDLE_ADDRESS].add(address)
            report.idle.append(f"{address}: {why}")

    if complete:
        # What was reported for this pool before and is not any more is resolved.
        still_open = Finding.objects.filter(kind__in=list(reported), resolved_at=None).only(
            "pk", "kind", "subject"
        )
        done = [f.pk for f in still_open if _in(net, f.subject) and f.subject not in reported[f.kind]]
        Finding.objects.filter(pk__in=done).update(resolved_at=now)


def _in(net: ipaddress.IPv4Network | ipaddress.IPv6Network, text: str) -> bool:
    try:
        return ipaddress.ip_address(text) in net
    except ValueError:
        return False


def _recheck_foreign(
    pool: IPPool,
    hosts: list[Host],
    stale: list[IPAllocation],
    reported: dict[str, set[str]],
    report: AddressReport,
) -> None:
    for host in hosts:
        try:
            result = probe(host, pool, [a.address for a in stale])
        except HostError:
            continue
        free = []
        for allocation in stale:
            held_by = holder_text(result, allocation.address, host)
            if held_by:
                IPAllocation.objects.filter(pk=allocation.pk).update(held_by=held_by[:200])
                Finding.open(host, Finding.Kind.FOREIGN_ADDRESS, allocation.address, held_by)
                reported[Finding.Kind.FOREIGN_ADDRESS].add(allocation.address)
                report.foreign.append(f"{allocation.address}: {held_by}")
            else:
                free.append(allocation)
        # Released together, each an audit row of the reconcile's.
        report.released += address_release_foreign(
            allocations=free, why=f"no container holds it and nothing answers ARP (asked from {host.name})"
        )
        return  # one host's view of the segment is enough
    report.unchecked.append(f"{pool.name}: no host could probe the held addresses")
