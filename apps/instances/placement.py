"""Where new instances go: hosts with room, one app's instances spread over hosts, and
among equals the fullest host first (best fit), so the fleet stays packed."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Count, Q, Sum

from apps.catalog.models import App
from apps.hosts.models import Host


@dataclass
class HostRoom:
    host: Host
    free_memory_mb: int
    free_cpus: Decimal
    app_instances: int

    def fits(self, memory_mb: int, cpus: Decimal) -> bool:
        return self.free_memory_mb >= memory_mb and self.free_cpus >= cpus


def rooms(app: App) -> list[HostRoom]:
    """Free capacity of every host that may take new instances of this app."""
    # Hosts failing their checks take nothing, unless ops overrode that with a reason.
    hosts = Host.objects.filter(state=Host.State.ACTIVE, images=app.base_image).filter(
        Q(checks_ok=True) | ~Q(checks_override="")
    )
    if app.ip_pool_id is not None:
        hosts = hosts.filter(ip_pools=app.ip_pool_id)  # only hosts bridged onto the app's pool
    hosts = hosts.exclude(cpus=None).annotate(
        reserved_memory=Sum("instances__memory_mb"),
        reserved_cpus=Sum("instances__cpus"),
        app_count=Count("instances", filter=Q(instances__app=app)),
    )
    out = []
    for host in hosts:
        cpu_capacity = Decimal(str(host.cpus)) * Decimal(str(settings.CPU_OVERCOMMIT))
        out.append(
            HostRoom(
                host=host,
                free_memory_mb=(host.memory_mb or 0) - (host.reserved_memory or 0),
                free_cpus=cpu_capacity - (host.reserved_cpus or Decimal(0)),
                app_instances=host.app_count,
            )
        )
    return out


def place(app: App, count: int) -> list[Host]:
    """Choose a host for each of `count` new instances, or refuse saying how much is free."""
    candidates = rooms(app)
    chosen: list[Host] = []
    for _ in range(count):
        fitting = [room for room in candidates if room.fits(app.memory_mb, app.cpus)]
        if not fitting:
            raise ValidationError(_capacity_message(app, count, len(chosen), candidates))
        # Spread first (fewest instances of this app), then best fit (least memory left).
        best = min(fitting, key=lambda room: (room.app_instances, room.free_memory_mb, room.host.name))
        best.free_memory_mb -= app.memory_mb
        best.free_cpus -= app.cpus
        best.app_instances += 1
        chosen.append(best.host)
    return chosen


def _capacity_message(app: App, wanted: int, placed: int, candidates: list[HostRoom]) -> str:
    if not candidates:
        return (
            f"No active host that passes its checks has the image {app.base_image.reference}"
            + (f" and serves IP pool {app.ip_pool.name}" if app.ip_pool is not None else "")
            + "; nothing can be placed. Ask ops to check the hosts."
        )
    fit_now = (
        sum(
            min(
                room.free_memory_mb // app.memory_mb if app.memory_mb else 0,
                int(room.free_cpus // app.cpus) if app.cpus else 0,
            )
            for room in candidates
        )
        + placed
    )
    free_memory = sum(max(room.free_memory_mb, 0) for room in candidates) + placed * app.memory_mb
    free_cpus = sum(max(room.free_cpus, Decimal(0)) for room in candidates) + placed * app.cpus
    return (
        f"Not enough free capacity for {wanted} more instance(s) of {app.memory_mb} MiB and {app.cpus} CPU: "
        f"the fleet has {free_memory} MiB and {free_cpus} CPU free, room for {fit_now} more."
    )


def fleet_limits() -> tuple[int, int]:
    """The largest host's memory (MiB) and cores: no instance may be bigger than that."""
    agg = Host.objects.filter(state__in=[Host.State.ACTIVE, Host.State.DRAINING]).exclude(cpus=None)
    memory = max((h.memory_mb or 0 for h in agg), default=0)
    cpus = max((h.cpus or 0 for h in agg), default=0)
    return memory, cpus
