"""The consolidation planner on real rows: the live fleet (or a stored what-if scenario) as the
planner's plain numbers, and "apply", which drains the hosts the plan empties."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from apps.accounts import permissions
from apps.fleet import drain as draining
from apps.fleet import planner
from apps.fleet.models import Drain, FleetScenario
from apps.hosts.models import Host
from apps.instances.models import Instance
from apps.metrics.models import Sample


@dataclass
class Fleet:
    name: str
    hosts: list[planner.HostCap]
    items: list[planner.Item]
    names: dict[int, str]  # host id -> name
    live: bool


def live_fleet() -> Fleet:
    """Hosts with known capacity (those that take nothing, such as draining or unreachable ones,
    must be emptied) and every instance with its limits and the working set last measured."""
    overcommit = float(settings.CPU_OVERCOMMIT)
    rows = list(Host.objects.exclude(cpus=None).exclude(state=Host.State.PENDING).order_by("name"))
    hosts = [
        planner.HostCap(
            id=h.pk,
            name=h.name,
            memory_mb=h.memory_mb or 0,
            cpus=float(h.cpus or 0) * overcommit,
            usable=h.takes_instances,
        )
        for h in rows
    ]
    known = {h.pk for h in rows}
    used = _working_sets()
    items = [
        planner.Item(
            id=pk,
            app_id=app_id,
            host_id=host_id if host_id in known else None,
            memory_mb=memory,
            cpus=float(cpus),
            used_memory_mb=used.get((app_id, slot), 0.0),
        )
        for pk, app_id, slot, host_id, memory, cpus in Instance.objects.exclude(
            desired_state=Instance.Desired.REMOVED
        ).values_list("pk", "app_id", "slot", "host_id", "memory_mb", "cpus")
    ]
    return Fleet("the live fleet", hosts, items, {h.pk: h.name for h in rows}, live=True)


def _working_sets() -> dict[tuple[int, int], float]:
    """The latest working set (MiB) of each instance, from the last two minutes of samples."""
    since = timezone.now() - timedelta(seconds=120)
    out: dict[tuple[int, int], float] = {}
    for app_id, slot, working_set in (
        Sample.objects.filter(t__gte=since).order_by("t").values_list("app_id", "slot", "working_set")
    ):
        out[(app_id, slot)] = (working_set or 0) / (1024 * 1024)
    return out


def scenario_fleet(scenario: FleetScenario) -> Fleet:
    hosts = [
        planner.HostCap(id=h[0], name=h[1], memory_mb=h[2], cpus=h[3], usable=h[4]) for h in scenario.hosts
    ]
    items = [
        planner.Item(
            id=i[0], app_id=i[1], host_id=i[2], memory_mb=i[3], cpus=i[4], used_memory_mb=i[5], used_cpu=i[6]
        )
        for i in scenario.items
    ]
    return Fleet(scenario.name, hosts, items, {h.id: h.name for h in hosts}, live=False)


def scenario_save(*, name: str, apps: int, instances: int, hosts: int, seed: int) -> FleetScenario:
    """Generate a seeded synthetic fleet and keep it under `name` (replacing one of that name)."""
    if not 1 <= hosts <= 1000 or not 1 <= apps <= 20000 or not apps <= instances <= 12 * apps:
        raise ValidationError(
            f"Give 1-1000 hosts, 1-20000 apps and between one and twelve instances per app "
            f"(got {hosts} hosts, {apps} apps, {instances} instances)."
        )
    try:
        caps, items = planner.synthetic_fleet(apps=apps, instances=instances, hosts=hosts, seed=seed)
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc
    scenario, _ = FleetScenario.objects.update_or_create(
        name=name,
        defaults={
            "description": f"{apps} apps, {instances} instances on {hosts} hosts (seed {seed})",
            "hosts": [[h.id, h.name, h.memory_mb, h.cpus, h.usable] for h in caps],
            "items": [
                [
                    i.id,
                    i.app_id,
                    i.host_id,
                    i.memory_mb,
                    i.cpus,
                    round(i.used_memory_mb, 1),
                    round(i.used_cpu, 3),
                ]
                for i in items
            ],
        },
    )
    return scenario


@dataclass
class HostRow:
    id: int
    name: str
    usable: bool
    before: tuple[float, float]
    after: tuple[float, float]
    used_before: tuple[float, float]
    used_after: tuple[float, float]
    instances_before: int
    instances_after: int
    emptied: bool


def rows(fleet: Fleet, plan: planner.Plan) -> list[HostRow]:
    before: dict[int, int] = {}
    after: dict[int, int] = {}
    for item in fleet.items:
        if item.host_id is not None:
            before[item.host_id] = before.get(item.host_id, 0) + 1
    for host_id in plan.placement.values():
        after[host_id] = after.get(host_id, 0) + 1
    homes = {item.id: item.host_id for item in fleet.items}
    for item_id in plan.unplaced:  # an instance that fits nowhere else stays where it is
        home = homes.get(item_id)
        if home is not None and item_id not in plan.placement:
            after[home] = after.get(home, 0) + 1
    emptied = set(plan.emptied)
    zero = (0.0, 0.0)
    return [
        HostRow(
            id=h.id,
            name=h.name,
            usable=h.usable,
            before=plan.fill_before.get(h.id, zero),
            after=plan.fill_after.get(h.id, zero),
            used_before=plan.used_before.get(h.id, zero),
            used_after=plan.used_after.get(h.id, zero),
            instances_before=before.get(h.id, 0),
            instances_after=after.get(h.id, 0),
            emptied=h.id in emptied,
        )
        for h in fleet.hosts
    ]


@transaction.atomic
def apply(*, user: Any, fleet: Fleet, plan: planner.Plan) -> list[Drain]:
    """Drain every host the plan empties (on the live fleet): their instances move to the hosts
    that stay, one at a time per host, placed as any move is. One transaction: every host is
    draining before any drain starts, so no drain moves an instance onto a host that is about
    to be drained too, and a refusal halfway leaves nothing half applied."""
    permissions.require_ops(user, "apply a consolidation plan")
    if not fleet.live:
        raise ValidationError(f"{fleet.name} is a what-if fleet: there is nothing real to drain.")
    if plan.unplaced:
        raise ValidationError(
            f"The plan leaves {len(plan.unplaced)} instance(s) without a host; nothing is drained."
        )
    if plan.unspread:
        raise ValidationError(
            f"The plan leaves {len(plan.unspread)} app(s) with all their instances on one host; nothing is drained."
        )
    drains = []
    for host in Host.objects.filter(pk__in=plan.emptied).order_by("name"):
        if host.drains.filter(state=Drain.State.RUNNING).exists():
            continue
        drains.append(draining.host_drain(user=user, host=host))
    return drains


def reserved_total() -> tuple[int, Decimal]:
    agg = Instance.objects.exclude(desired_state=Instance.Desired.REMOVED).aggregate(
        m=Sum("memory_mb"), c=Sum("cpus")
    )
    return agg["m"] or 0, agg["c"] or Decimal(0)
