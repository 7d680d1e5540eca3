"""Chart data: one app's (or one instance's, or one host's) rates on a shared time axis.

The source follows the step: raw samples (rates computed on the fly) for steps under a minute,
minute rollups up to an hour, hour rollups beyond. Each answer has one `t` array of bucket
starts (epoch seconds) and, per series, arrays of the same length with None where there was no
data: what uPlot draws directly.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.applications.models import App
from apps.events import selectors as events
from apps.hosts.models import Host
from apps.instances.models import Operation
from apps.metrics.models import Rollup, Sample
from apps.metrics.services import MAX_INTERVAL, SAMPLE_FIELDS, Bucket, Point, RollupRow, points

RANGES = {"1h": (3600, 10), "24h": (86400, 60), "7d": (7 * 86400, 600), "30d": (30 * 86400, 3600)}
MAX_POINTS = 5000
FIELDS = (
    "cpu_pct",
    "cpu_cores",
    "cpu_limit",
    "throttled_pct",
    "working_set",
    "working_set_max",
    "memory_limit",
    "net_rx_bps",
    "net_tx_bps",
    "blk_read_bps",
    "blk_write_bps",
    "oom_kills",
)
# Operations worth a marker on the time axis ("why did my app die").
MARKED = {
    Operation.Kind.DEPLOY,
    Operation.Kind.REDEPLOY,
    Operation.Kind.RELEASE,
    Operation.Kind.UPGRADE,
    Operation.Kind.SCALE,
    Operation.Kind.START,
    Operation.Kind.STOP,
    Operation.Kind.RESTART,
    Operation.Kind.MOVE,
    Operation.Kind.RECONCILE,
    Operation.Kind.RESIZE,
}
# ASCII digits only ("²" is a digit to str.isdigit), at most ten of them.
_DURATION = re.compile(r"(\d{1,10})\s*([smhd]?)", re.ASCII)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, what: str) -> int:
    """'90' (seconds), '10s', '5m', '24h', '7d' -> seconds; at most as far back as metrics are kept."""
    text = text.strip()
    match = _DURATION.fullmatch(text)
    if not match:
        raise ValidationError(
            {what: f"{text[:40]!r} is not a duration; use seconds or e.g. 10s, 5m, 24h, 7d."}
        )
    seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    kept = settings.METRICS_HOUR_RETENTION
    if seconds > kept:
        raise ValidationError(
            {
                what: f"{text!r} is longer than the {kept // 86400} days metrics are kept; give at most {kept // 86400}d."
            }
        )
    return seconds


@dataclass
class Window:
    since: datetime
    until: datetime
    step: int

    @property
    def source(self) -> str:
        return "raw" if self.step < Rollup.MINUTE else ("1m" if self.step < Rollup.HOUR else "1h")


def window(
    *,
    range_name: str | None = None,
    since: str | None = None,
    step: str | None = None,
    now: datetime | None = None,
) -> Window:
    """The time window of a chart request; every bad value is refused with what is allowed."""
    now = now or timezone.now()
    default_step = RANGES["1h"][1]
    if range_name:
        if range_name not in RANGES:
            raise ValidationError(
                {"range": f"{range_name!r} is not a range; use one of {', '.join(RANGES)}."}
            )
        seconds, default_step = RANGES[range_name]
        start = now - timedelta(seconds=seconds)
    elif since:
        try:
            parsed = parse_datetime(since)
        except ValueError:
            raise ValidationError(
                {
                    "since": f"{since[:40]!r} is not a valid time; give ISO 8601 (2026-11-27T10:00:00Z) "
                    "or how long ago (90m, 24h, 7d)."
                }
            ) from None
        if parsed is None:
            start = now - timedelta(seconds=parse_duration(since, "since"))
        else:
            start = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        if start >= now:
            raise ValidationError({"since": f"{since!r} is not in the past."})
        span = (now - start).total_seconds()
        default_step = next((s for limit, s in RANGES.values() if span <= limit), RANGES["30d"][1])
    else:
        start = now - timedelta(seconds=RANGES["1h"][0])
    chosen = parse_duration(step, "step") if step else default_step
    if chosen < 1:
        raise ValidationError({"step": "The step is at least 1 second."})
    # Older data exists only as rollups: the step is at least their bucket.
    age = (now - start).total_seconds()
    if age > settings.METRICS_RAW_RETENTION:
        chosen = max(chosen, Rollup.MINUTE)
    if age > settings.METRICS_MINUTE_RETENTION:
        chosen = max(chosen, Rollup.HOUR)
    chosen = max(chosen, int(settings.METRICS_INTERVAL)) if chosen < Rollup.MINUTE else chosen
    if age / chosen > MAX_POINTS:
        raise ValidationError(
            {"step": f"{age / chosen:.0f} points is too many; at most {MAX_POINTS} (use a larger step)."}
        )
    return Window(since=start, until=now, step=chosen)


def _floor(epoch: float, step: int) -> int:
    whole = int(epoch)
    return whole - whole % step


def _points(w: Window, where: Q) -> Iterable[tuple[tuple[int, int], Point | RollupRow]]:
    if w.source == "raw":
        rows = (
            Sample.objects.filter(where, t__gte=w.since - timedelta(seconds=MAX_INTERVAL), t__lt=w.until)
            .order_by("app_id", "slot", "t")
            .values(*SAMPLE_FIELDS)
        )
        for key, series in points(rows).items():
            for p in series:
                if p.t >= w.since:
                    yield key, p
        return
    step = Rollup.MINUTE if w.source == "1m" else Rollup.HOUR
    # Plain tuples, not model instances: a 24 h chart reads 1,440 rows per instance.
    rows = (
        Rollup.objects.filter(where, step=step, t__gte=w.since, t__lt=w.until)
        .order_by("t")
        .values_list(*RollupRow._fields)
    )
    for row in rows:
        r = RollupRow(*row)
        yield (r.app_id, r.slot), r


def _values(bucket: Bucket) -> dict[str, Any]:
    cores = bucket.rate(bucket.cpu_cores)
    return {
        "cpu_pct": round(100 * cores / bucket.cpu_limit, 2) if bucket.cpu_limit else None,
        "cpu_cores": round(cores, 4),
        "cpu_limit": bucket.cpu_limit,
        "throttled_pct": round(100 * bucket.rate(bucket.throttled), 2),
        "working_set": int(bucket.working_set / bucket.count) if bucket.count else None,
        "working_set_max": bucket.working_set_max,
        "memory_limit": bucket.memory_limit,
        "net_rx_bps": round(bucket.rate(bucket.net_rx_bps), 1),
        "net_tx_bps": round(bucket.rate(bucket.net_tx_bps), 1),
        "blk_read_bps": round(bucket.rate(bucket.blk_read_bps), 1),
        "blk_write_bps": round(bucket.rate(bucket.blk_write_bps), 1),
        "oom_kills": bucket.oom_kills,
    }


def _weight(p: Point | RollupRow) -> float:
    return p.seconds if isinstance(p, Point) else float(p.samples)


def _series(w: Window, where: Q) -> tuple[list[int], dict[tuple[int, int], dict[int, dict[str, Any]]]]:
    buckets: dict[tuple[int, int], dict[int, Bucket]] = defaultdict(lambda: defaultdict(Bucket))
    for key, p in _points(w, where):
        buckets[key][_floor(p.t.timestamp(), w.step)].add(p, _weight(p))
    axis = list(
        range(_floor(w.since.timestamp(), w.step) + w.step, _floor(w.until.timestamp(), w.step) + 1, w.step)
    )
    values = {key: {t: _values(b) for t, b in by_t.items()} for key, by_t in buckets.items()}
    return axis, values


def _arrays(axis: list[int], by_t: dict[int, dict[str, Any]]) -> dict[str, list[Any]]:
    return {f: [by_t[t][f] if t in by_t else None for t in axis] for f in FIELDS}


SUMMED = [f for f in FIELDS if f not in ("cpu_pct", "throttled_pct")]


def _total(series: list[dict[str, list[Any]]], length: int) -> dict[str, list[Any]]:
    """The whole app per bucket: sums, and CPU % of the summed limits."""
    if len(series) == 1:
        return dict(series[0])
    out: dict[str, list[Any]] = {}
    for f in SUMMED:
        columns = [s[f] for s in series]
        out[f] = (
            [
                sum(v for v in values if v is not None) if any(v is not None for v in values) else None
                for values in zip(*columns, strict=True)
            ]
            if columns
            else [None] * length
        )
    weighted = (
        [
            sum(p * c for p, c in zip(pcts, limits, strict=True) if p is not None and c is not None)
            for pcts, limits in zip(
                zip(*[s["throttled_pct"] for s in series], strict=True),
                zip(*[s["cpu_limit"] for s in series], strict=True),
                strict=True,
            )
        ]
        if series
        else [0.0] * length
    )
    out["cpu_pct"] = [
        round(100 * cores / limit, 2) if cores is not None and limit else None
        for cores, limit in zip(out["cpu_cores"], out["cpu_limit"], strict=True)
    ]
    out["throttled_pct"] = [
        round(w / limit, 2) if limit else None for w, limit in zip(weighted, out["cpu_limit"], strict=True)
    ]
    return out


def markers(app: App, w: Window, slot: int | None = None) -> list[dict[str, Any]]:
    ops = Operation.objects.filter(
        app=app, kind__in=MARKED, finished_at__gte=w.since, finished_at__lt=w.until
    ).select_related("instance", "requested_by")
    out = []
    for op in ops.order_by("finished_at")[:500]:
        if slot is not None and op.instance is not None and op.instance.slot != slot:
            continue
        who = f" by {op.requested_by.username}" if op.requested_by else ""
        what = f" {op.instance.container_name}" if op.instance else ""
        result = "" if op.status == Operation.Status.SUCCEEDED else f" ({op.status})"
        assert op.finished_at is not None
        out.append(
            {
                "t": int(op.finished_at.timestamp()),
                "kind": op.kind,
                "text": f"{op.get_kind_display()}{what}{who}{result}: {op.summary}".strip(": "),
            }
        )
    return out


def app_metrics(app: App, w: Window, slot: int | None = None) -> dict[str, Any]:
    where = Q(app=app) if slot is None else Q(app=app, slot=slot)
    axis, values = _series(w, where)
    slots = sorted(key[1] for key in values)
    deaths = events.markers(app, w.since, w.until, slot)
    marks = markers(app, w, slot) + deaths
    # OOM kills the hosts reported as they happened; without them (no watcher ran), the ones
    # the cgroup counters show.
    counted = not any(m["kind"] == "oom" for m in deaths)
    for key, by_t in sorted(values.items()):
        for t, v in sorted(by_t.items()):
            if counted and v["oom_kills"]:
                marks.append(
                    {"t": t, "kind": "oom", "text": f"OOM kill in {app.slug}/{key[1]} ({v['oom_kills']})"}
                )
    series: list[dict[str, Any]] = [{"slot": s, **_arrays(axis, values[(app.pk, s)])} for s in slots]
    return {
        "app": app.slug,
        "slot": slot,
        "since": w.since.isoformat(),
        "until": w.until.isoformat(),
        "step": w.step,
        "source": w.source,
        "t": axis,
        "series": series,
        "total": _total([{f: s[f] for f in FIELDS} for s in series], len(axis)),
        "markers": sorted(marks, key=lambda m: m["t"]),
    }


def host_metrics(host: Host, w: Window) -> dict[str, Any]:
    """Used (measured) against reserved (the instances' limits) against the host's capacity."""
    axis, values = _series(w, Q(host=host))
    total = _total([_arrays(axis, by_t) for by_t in values.values()], len(axis))
    return {
        "host": host.name,
        "since": w.since.isoformat(),
        "until": w.until.isoformat(),
        "step": w.step,
        "source": w.source,
        "t": axis,
        "capacity": {"cpus": host.cpus, "memory": (host.memory_mb or 0) * 1024 * 1024},
        "used": {"cpu_cores": total["cpu_cores"], "working_set": total["working_set"]},
        "reserved": {"cpu_cores": total["cpu_limit"], "memory": total["memory_limit"]},
        "net_rx_bps": total["net_rx_bps"],
        "net_tx_bps": total["net_tx_bps"],
    }
