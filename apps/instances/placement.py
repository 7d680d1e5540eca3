"""Where new instances go: hosts with room, one app's instances spread over hosts, and
among equals the fullest host first (best fit), so the fleet stays packed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Count, Q, QuerySet, Sum, Value

from apps.applications.models import App
from apps.hosts.models import Host


@dataclass
class HostRoom:
    """A host's capacity, what its instances reserve (their limits, a hard bound) and what they
    use (measured by the metrics sweep, a soft one)."""

    host: Host
    memory_mb: int
    cpus: Decimal  # with the CPU overcommit applied
    reserved_memory_mb: int
    reserved_cpus: Decimal
    app_instances: int = 0
    used_memory_mb: float | None = None
    used_cpus: float | None = None

    @property
    def free_memory_mb(self) -> int:
        return self.memory_mb - self.reserved_memory_mb

    @property
    def free_cpus(self) -> Decimal:
        return self.cpus - self.reserved_cpus

    def fits(self, memory_mb: int, cpus: Decimal) -> bool:
        return self.free_memory_mb >= memory_mb and self.free_cpus >= cpus

    def fill_after(self, memory_mb: int, cpus: Decimal) -> float:
        """How full the host would be (the larger of its two reserved fractions)."""
        memory = (self.reserved_memory_mb + memory_mb) / self.memory_mb if self.memory_mb else 1.0
        cpu = float((self.reserved_cpus + cpus) / self.cpus) if self.cpus else 1.0
        return max(memory, cpu)

    def busy_after(self, memory_mb: int, cpus: Decimal) -> bool:
        """Whether what is measured in use, plus the new instance's limits, would crowd the host:
        its memory past 90 %, or its CPUs past the real cores (limits may overcommit them)."""
        cores = float(self.host.cpus or 0)
        memory = (self.used_memory_mb or 0) + memory_mb > 0.9 * self.memory_mb
        cpu = cores > 0 and (self.used_cpus or 0) + float(cpus) > cores
        return memory or cpu

    def add(self, memory_mb: int, cpus: Decimal) -> None:
        self.reserved_memory_mb += memory_mb
        self.reserved_cpus += cpus
        self.app_instances += 1
        if self.used_memory_mb is not None:
            self.used_memory_mb += memory_mb  # until measured, count a new instance at its limit

    def describe(self) -> str:
        used = ""
        if self.used_memory_mb is not None:
            used = f", {self.used_memory_mb:.0f} MiB"
            used += f" and {self.used_cpus:.2f} CPU in use" if self.used_cpus is not None else " in use"
        return (
            f"{self.host.name} ({self.reserved_memory_mb}/{self.memory_mb} MiB and "
            f"{self.reserved_cpus.normalize():f}/{self.cpus.normalize():f} CPU reserved{used})"
        )


def host_rooms(hosts: QuerySet[Host], app: App | None = None) -> list[HostRoom]:
    """Capacity, reservations and measured use of the hosts, in one query."""
    annotated = hosts.exclude(cpus=None).annotate(
        reserved_memory=Sum("instances__memory_mb"),
        reserved_cpus=Sum("instances__cpus"),
        app_count=Count("instances", filter=Q(instances__app=app)) if app is not None else Value(0),
    )
    out = []
    for host in annotated:
        usage = host.usage or {}
        out.append(
            HostRoom(
                host=host,
                memory_mb=host.memory_mb or 0,
                cpus=Decimal(str(host.cpus)) * Decimal(str(settings.CPU_OVERCOMMIT)),
                reserved_memory_mb=host.reserved_memory or 0,
                reserved_cpus=host.reserved_cpus or Decimal(0),
                app_instances=host.app_count,
                used_memory_mb=usage.get("memory_mb"),
                used_cpus=usage.get("cpus"),
            )
        )
    return out


def rooms(app: App, exclude: Iterable[int] = ()) -> list[HostRoom]:
    """Free capacity of every host that may take new instances of this app: active, passing its
    checks (or overridden by ops with a reason), with the image, bridged onto the app's pool.
    Draining and unreachable hosts take nothing."""
    hosts = Host.objects.filter(state=Host.State.ACTIVE, images=app.base_image).filter(
        Q(checks_ok=True) | ~Q(checks_override="")
    )
    if app.ip_pool_id is not None:
        hosts = hosts.filter(ip_pools=app.ip_pool_id)  # only hosts bridged onto the app's pool
    return host_rooms(hosts.exclude(pk__in=list(exclude)), app)


@dataclass
class Choice:
    host: Host
    reason: str


def choose(app: App, count: int, exclude: Iterable[int] = ()) -> list[Choice]:
    """A host for each of `count` new instances, with why; or refuse saying how much is free.

    Spread first: the host with the fewest of this app's instances, so an app with 2+ instances
    is never all on one host while another has room. Then hosts whose measured use leaves room
    before those it would crowd. Then best fit: the host left fullest (by its reservations), so
    the fleet stays packed and whole hosts stay free for big instances."""
    candidates = rooms(app, exclude)
    chosen: list[Choice] = []
    for _ in range(count):
        fitting = [room for room in candidates if room.fits(app.memory_mb, app.cpus)]
        if not fitting:
            raise ValidationError(_capacity_message(app, count, len(chosen), candidates))

        def key(room: HostRoom) -> tuple[int, bool, float, str]:
            busy = room.busy_after(app.memory_mb, app.cpus)
            return (room.app_instances, busy, -room.fill_after(app.memory_mb, app.cpus), room.host.name)

        ranked = sorted(fitting, key=key)
        best = ranked[0]
        reason = _reason(app, best, ranked[1:], len(candidates) - len(fitting))
        best.add(app.memory_mb, app.cpus)
        chosen.append(Choice(best.host, reason))
    return chosen


def place(app: App, count: int, exclude: Iterable[int] = ()) -> list[Host]:
    return [choice.host for choice in choose(app, count, exclude)]


def _reason(app: App, best: HostRoom, others: list[HostRoom], full: int) -> str:
    why = []
    more = [room for room in others if room.app_instances > best.app_instances]
    if more:
        why.append(
            f"fewest instances of {app.slug} ({best.app_instances}; {more[0].host.name} has {more[0].app_instances})"
        )
    crowded = [
        room.host.name
        for room in others
        if room.app_instances == best.app_instances and room.busy_after(app.memory_mb, app.cpus)
    ]
    if crowded and not best.busy_after(app.memory_mb, app.cpus):
        why.append(f"its measured use leaves room ({', '.join(crowded[:3])} would be crowded)")
    why.append(f"fullest after placing ({best.fill_after(app.memory_mb, app.cpus):.0%} reserved)")
    text = f"{best.describe()}: " + ", then ".join(why)
    if others:
        text += "; also fitting: " + ", ".join(room.host.name for room in others[:4])
        text += f" and {len(others) - 4} more" if len(others) > 4 else ""
    if full:
        text += f"; {full} host(s) without room"
    return text


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
