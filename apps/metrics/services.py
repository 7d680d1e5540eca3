"""Collect cgroup counters from the hosts, roll them up into rates, and forget old ones.

One agent request per host per sweep (`hostagent stats` on the agent channel kept open on the
host's SSH connection), hosts swept in parallel; a host that is slow or down costs its own
thread its timeout and nothing else: the others' samples are stored as they arrive.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.hosts import gateway
from apps.hosts.models import Host
from apps.hosts.transport import MANAGED_LABEL, HostError
from apps.instances.models import Instance
from apps.metrics.models import Rollup, RollupMark, Sample

log = logging.getLogger(__name__)

# An interval longer than this (a host away for a while) is not spread into a rate.
MAX_INTERVAL = 300.0


@dataclass
class SweepReport:
    stored: int = 0
    hosts: dict[str, int] = field(default_factory=dict)  # host -> samples stored
    failed: dict[str, str] = field(default_factory=dict)  # host -> why


def _sweep(host: Host) -> dict[str, Any]:
    return gateway.agent(host, "stats", timeout=settings.METRICS_HOST_TIMEOUT, label=f"{MANAGED_LABEL}=1")


def collect_all() -> SweepReport:
    """One sweep over every active (or draining) host."""
    report = SweepReport()
    hosts = list(Host.objects.filter(state__in=[Host.State.ACTIVE, Host.State.DRAINING]).exclude(host_key=""))
    if not hosts:
        return report
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        futures = {pool.submit(_sweep, host): host for host in hosts}
        for future in as_completed(futures):
            host = futures[future]
            try:
                document = future.result()
            except HostError as exc:
                report.failed[host.name] = str(exc)
                Host.objects.filter(pk=host.pk).update(metrics_error=str(exc)[:500])
                continue
            stored = store(host, document)
            report.hosts[host.name] = stored
            report.stored += stored
            Host.objects.filter(pk=host.pk).update(
                metrics_at=timezone.now(), metrics_error="", usage=host_usage(host.usage, document)
            )
    if report.failed:
        log.warning("metrics sweep: no samples from %s", report.failed)
    return report


def host_usage(before: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """What the host's managed containers use now: their working sets, and their CPU rate since
    the previous sweep (none on the first, or when containers came and went and the total fell)."""
    containers = [c for c in document.get("containers", []) if not c.get("error")]
    now = float(document.get("time") or 0)
    cpu_ns = sum(int(c.get("cpu_usage_ns", 0)) for c in containers)
    memory_mb = sum(int(c.get("memory_working_set", 0)) for c in containers) / (1024 * 1024)
    cpus = None
    elapsed = now - float(before.get("t") or 0)
    if before and 0 < elapsed < 600 and cpu_ns >= int(before.get("cpu_ns") or 0):
        cpus = round((cpu_ns - int(before["cpu_ns"])) / (elapsed * 1e9), 3)
    return {"t": now, "cpu_ns": cpu_ns, "memory_mb": round(memory_mb, 1), "cpus": cpus}


# Sample columns filled from a sweep: (column, key in the agent's document).
COUNTERS = (
    ("cpu_ns", "cpu_usage_ns"),
    ("throttled_ns", "cpu_throttled_ns"),
    ("memory_usage", "memory_usage"),
    ("memory_limit", "memory_limit"),
    ("working_set", "memory_working_set"),
    ("rss", "memory_rss"),
    ("cache", "memory_cache"),
    ("swap", "memory_swap"),
    ("failcnt", "memory_failcnt"),
    ("oom_kills", "oom_kills"),
    ("pids", "pids"),
    ("blk_read", "blkio_read_bytes"),
    ("blk_write", "blkio_write_bytes"),
    ("net_rx", "net_rx_bytes"),
    ("net_tx", "net_tx_bytes"),
)
_COLUMNS = ("app_id", "slot", "host_id", "container_id", "t", "cpu_limit", *(c for c, _ in COUNTERS))


def store(host: Host, document: dict[str, Any]) -> int:
    """Samples for the host's instances from one `hostagent stats` document.

    This runs for every instance every sweep, so rows go in with one executemany rather than
    through model instances (the ORM's per-field work was most of the cost)."""
    when = connection.ops.adapt_datetimefield_value(datetime.fromtimestamp(float(document["time"]), tz=UTC))
    instances = {
        Instance.name_for(slug, slot): (app_id, slot, float(cpus))
        for slug, slot, app_id, cpus in Instance.objects.filter(host=host).values_list(
            "app__slug", "slot", "app_id", "cpus"
        )
    }
    rows = []
    for entry in document.get("containers", []):
        known = instances.get(entry.get("name", ""))
        if known is None or entry.get("error"):
            continue
        app_id, slot, cpus = known
        rows.append(
            (
                app_id,
                slot,
                host.pk,
                str(entry.get("id", ""))[:64],
                when,
                cpus,
                *(int(entry.get(key, 0)) for _, key in COUNTERS),
            )
        )
    if rows:
        table = connection.ops.quote_name(Sample._meta.db_table)
        columns = ", ".join(connection.ops.quote_name(c) for c in _COLUMNS)
        marks = ", ".join(["%s"] * len(_COLUMNS))
        with connection.cursor() as cursor:
            # Names from the model's own meta, values as parameters: nothing from outside.
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)  # noqa: S608
    return len(rows)


# --- rates -----------------------------------------------------------------------------------

RATE_FIELDS = ("cpu_ns", "throttled_ns", "net_rx", "net_tx", "blk_read", "blk_write")
SAMPLE_FIELDS = (
    "app_id",
    "slot",
    "host_id",
    "container_id",
    "t",
    "cpu_limit",
    "cpu_ns",
    "throttled_ns",
    "working_set",
    "memory_limit",
    "oom_kills",
    "pids",
    "net_rx",
    "net_tx",
    "blk_read",
    "blk_write",
)


@dataclass
class Point:
    """One interval between two samples of a slot, as rates, at the later sample's time."""

    t: datetime
    host_id: int | None
    seconds: float
    cpu_cores: float
    cpu_limit: float
    throttled: float
    working_set: int
    memory_limit: int
    net_rx_bps: float
    net_tx_bps: float
    blk_read_bps: float
    blk_write_bps: float
    oom_kills: int
    pids: int


def points(rows: Iterable[dict[str, Any]]) -> dict[tuple[int, int], list[Point]]:
    """Rates between consecutive samples of each slot (rows ordered by slot, then time).

    A new container (another id) or a counter that went down starts the counters again: that
    interval has no rates (rather than a negative or huge spike), and the OOM kills of the new
    container count from zero."""
    out: dict[tuple[int, int], list[Point]] = defaultdict(list)
    previous: dict[tuple[int, int], dict[str, Any]] = {}
    for row in rows:
        key = (row["app_id"], row["slot"])
        before = previous.get(key)
        previous[key] = row
        if before is None:
            continue
        seconds = (row["t"] - before["t"]).total_seconds()
        if seconds <= 0 or seconds > MAX_INTERVAL:
            continue
        same = before["container_id"] == row["container_id"] and all(row[f] >= before[f] for f in RATE_FIELDS)
        if not same:
            oom = row["oom_kills"] if before["container_id"] != row["container_id"] else 0
            if oom:
                out[key].append(_level_only(row, seconds, oom))
            continue
        out[key].append(
            Point(
                t=row["t"],
                host_id=row["host_id"],
                seconds=seconds,
                cpu_cores=(row["cpu_ns"] - before["cpu_ns"]) / 1e9 / seconds,
                cpu_limit=row["cpu_limit"],
                throttled=min(1.0, (row["throttled_ns"] - before["throttled_ns"]) / 1e9 / seconds),
                working_set=row["working_set"],
                memory_limit=row["memory_limit"],
                net_rx_bps=(row["net_rx"] - before["net_rx"]) / seconds,
                net_tx_bps=(row["net_tx"] - before["net_tx"]) / seconds,
                blk_read_bps=(row["blk_read"] - before["blk_read"]) / seconds,
                blk_write_bps=(row["blk_write"] - before["blk_write"]) / seconds,
                oom_kills=max(0, row["oom_kills"] - before["oom_kills"]),
                pids=row["pids"],
            )
        )
    return out


def _level_only(row: dict[str, Any], seconds: float, oom_kills: int) -> Point:
    return Point(
        t=row["t"],
        host_id=row["host_id"],
        seconds=0.0,  # no rates for this interval
        cpu_cores=0.0,
        cpu_limit=row["cpu_limit"],
        throttled=0.0,
        working_set=row["working_set"],
        memory_limit=row["memory_limit"],
        net_rx_bps=0.0,
        net_tx_bps=0.0,
        blk_read_bps=0.0,
        blk_write_bps=0.0,
        oom_kills=oom_kills,
        pids=row["pids"],
    )


class RollupRow(NamedTuple):
    """The fields of a Rollup a chart needs, as Bucket.add reads them."""

    app_id: int
    slot: int
    t: datetime
    host_id: int | None
    samples: int
    cpu_cores: float
    cpu_limit: float
    throttled: float
    working_set: int
    working_set_max: int
    memory_limit: int
    net_rx_bps: float
    net_tx_bps: float
    blk_read_bps: float
    blk_write_bps: float
    oom_kills: int
    pids_max: int


def _floor(moment: datetime, step: int) -> datetime:
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % step, tz=UTC)


@dataclass
class Bucket:
    host_id: int | None = None
    weight: float = 0.0
    count: int = 0
    cpu_cores: float = 0.0
    throttled: float = 0.0
    cpu_limit: float = 0.0
    working_set: float = 0.0
    working_set_max: int = 0
    memory_limit: int = 0
    net_rx_bps: float = 0.0
    net_tx_bps: float = 0.0
    blk_read_bps: float = 0.0
    blk_write_bps: float = 0.0
    oom_kills: int = 0
    pids_max: int = 0

    def add(self, p: Point | Rollup | RollupRow, weight: float) -> None:
        """Rates weighted by the time they cover; levels averaged over the points."""
        self.host_id = p.host_id
        self.count += 1 if isinstance(p, Point) else p.samples
        self.weight += weight
        self.cpu_cores += p.cpu_cores * weight
        self.throttled += p.throttled * weight
        self.net_rx_bps += p.net_rx_bps * weight
        self.net_tx_bps += p.net_tx_bps * weight
        self.blk_read_bps += p.blk_read_bps * weight
        self.blk_write_bps += p.blk_write_bps * weight
        self.cpu_limit = p.cpu_limit
        self.memory_limit = p.memory_limit
        self.oom_kills += p.oom_kills
        if isinstance(p, Point):
            self.working_set += p.working_set
            self.working_set_max = max(self.working_set_max, p.working_set)
            self.pids_max = max(self.pids_max, p.pids)
        else:
            self.working_set += p.working_set * p.samples
            self.working_set_max = max(self.working_set_max, p.working_set_max)
            self.pids_max = max(self.pids_max, p.pids_max)

    def rate(self, total: float) -> float:
        return total / self.weight if self.weight else 0.0

    def rollup(self, app_id: int, slot: int, step: int, t: datetime) -> Rollup:
        return Rollup(
            app_id=app_id,
            slot=slot,
            host_id=self.host_id,
            step=step,
            t=t,
            samples=self.count,
            cpu_cores=self.rate(self.cpu_cores),
            cpu_limit=self.cpu_limit,
            throttled=self.rate(self.throttled),
            working_set=int(self.working_set / self.count) if self.count else 0,
            working_set_max=self.working_set_max,
            memory_limit=self.memory_limit,
            net_rx_bps=self.rate(self.net_rx_bps),
            net_tx_bps=self.rate(self.net_tx_bps),
            blk_read_bps=self.rate(self.blk_read_bps),
            blk_write_bps=self.rate(self.blk_write_bps),
            oom_kills=self.oom_kills,
            pids_max=self.pids_max,
        )


ROLLUP_FIELDS = [
    "host",
    "samples",
    "cpu_cores",
    "cpu_limit",
    "throttled",
    "working_set",
    "working_set_max",
    "memory_limit",
    "net_rx_bps",
    "net_tx_bps",
    "blk_read_bps",
    "blk_write_bps",
    "oom_kills",
    "pids_max",
]


def _save(rollups: list[Rollup]) -> None:
    Rollup.objects.bulk_create(
        rollups,
        batch_size=500,
        update_conflicts=True,
        unique_fields=["app", "slot", "step", "t"],
        update_fields=ROLLUP_FIELDS,
    )


def rollup(now: datetime | None = None) -> dict[int, int]:
    """Make the minute and hour rollups that are complete by now, then drop expired data.
    Returns how many rollups were written per step."""
    now = now or timezone.now()
    # Samples of the last sweep may still be on their way: a minute is final a sweep later.
    settled = now - timedelta(seconds=2 * settings.METRICS_INTERVAL)
    written = {Rollup.MINUTE: _rollup_minutes(_floor(settled, Rollup.MINUTE)), Rollup.HOUR: 0}
    minutes_until = RollupMark.objects.filter(step=Rollup.MINUTE).values_list("until", flat=True).first()
    if minutes_until is not None:
        # An hour is final once all its minutes are.
        written[Rollup.HOUR] = _rollup_hours(_floor(minutes_until, Rollup.HOUR))
    expire(now)
    return written


def _mark(step: int, default: datetime) -> RollupMark:
    mark, _ = RollupMark.objects.get_or_create(step=step, defaults={"until": default})
    return mark


def _commit(
    buckets: dict[tuple[int, int, datetime], Bucket], step: int, mark: RollupMark, end: datetime
) -> int:
    """Write the buckets and move the mark in one transaction: a crash redoes the whole step."""
    made = [b.rollup(app_id, slot, step, t) for (app_id, slot, t), b in buckets.items()]
    with transaction.atomic():
        _save(made)
        RollupMark.objects.filter(pk=mark.pk).update(until=end)
    return len(made)


def _rollup_minutes(end: datetime) -> int:
    first = Sample.objects.order_by("t").values_list("t", flat=True).first()
    if first is None:
        return 0
    mark = _mark(Rollup.MINUTE, _floor(first, Rollup.MINUTE))
    start = mark.until
    if end <= start:
        return 0
    rows = (
        Sample.objects.filter(t__gte=start - timedelta(seconds=MAX_INTERVAL), t__lt=end)
        .order_by("app_id", "slot", "t")
        .values(*SAMPLE_FIELDS)
    )
    buckets: dict[tuple[int, int, datetime], Bucket] = defaultdict(Bucket)
    for (app_id, slot), series in points(rows.iterator(chunk_size=2000)).items():
        for p in series:
            if p.t < start:
                continue
            buckets[(app_id, slot, _floor(p.t, Rollup.MINUTE))].add(p, p.seconds)
    return _commit(buckets, Rollup.MINUTE, mark, end)


def _rollup_hours(end: datetime) -> int:
    first = Rollup.objects.filter(step=Rollup.MINUTE).order_by("t").values_list("t", flat=True).first()
    if first is None:
        return 0
    mark = _mark(Rollup.HOUR, _floor(first, Rollup.HOUR))
    start = mark.until
    if end <= start:
        return 0
    buckets: dict[tuple[int, int, datetime], Bucket] = defaultdict(Bucket)
    for minute in Rollup.objects.filter(step=Rollup.MINUTE, t__gte=start, t__lt=end).iterator(
        chunk_size=2000
    ):
        buckets[(minute.app_id, minute.slot, _floor(minute.t, Rollup.HOUR))].add(
            minute, float(minute.samples)
        )
    return _commit(buckets, Rollup.HOUR, mark, end)


def expire(now: datetime) -> None:
    Sample.objects.filter(t__lt=now - timedelta(seconds=settings.METRICS_RAW_RETENTION)).delete()
    Rollup.objects.filter(
        step=Rollup.MINUTE, t__lt=now - timedelta(seconds=settings.METRICS_MINUTE_RETENTION)
    ).delete()
    Rollup.objects.filter(
        step=Rollup.HOUR, t__lt=now - timedelta(seconds=settings.METRICS_HOUR_RETENTION)
    ).delete()
