"""An app's (or one instance's) timeline: what happened to its containers (apps.events), the
changes made to it (operations: deploys, scales, resizes, moves, restarts, upgrades) and the
commands and terminals run in it (apps.console), newest first, in one list."""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils.dateparse import parse_datetime

from apps.applications.models import App
from apps.console.logs import LogLine, epoch
from apps.console.models import ExecSession
from apps.events.models import ContainerEvent
from apps.hosts.gateway import LogQuery
from apps.instances.models import Instance, Operation

# What the timeline can be narrowed to.
CATEGORIES = {
    "deaths": "Deaths, OOM kills, crash loops",
    "lifecycle": "Starts, stops, restarts, replacements",
    "changes": "Deploys, scales, resizes, moves, restarts",
    "exec": "Commands and terminals",
    "failures": "Everything that went wrong",
}
LIFECYCLE = (
    ContainerEvent.Kind.STARTED,
    ContainerEvent.Kind.STOPPED,
    ContainerEvent.Kind.RESTARTED,
    ContainerEvent.Kind.REPLACED,
)
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MARKERS_MAX = 500


@dataclass(frozen=True)
class Entry:
    time: datetime
    category: str  # one of CATEGORIES but "failures"
    kind: str  # the event's or operation's kind, or exec's "command"/"terminal"
    title: str
    detail: str = ""
    instance: str = ""  # container name, "" for the whole app
    who: str = ""
    failed: bool = False
    exit_code: int | None = None
    oom: bool = False
    lines: list[list[str]] = field(default_factory=list)  # [stream, time, text], oldest first
    key: str = ""  # unique across sources: "event:12", "operation:3", "exec:9"

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": self.time.isoformat(),
            "category": self.category,
            "kind": self.kind,
            "title": self.title,
            "detail": self.detail,
            "instance": self.instance,
            "who": self.who,
            "failed": self.failed,
            "exit_code": self.exit_code,
            "oom": self.oom,
            "lines": [{"stream": s, "time": t, "text": x} for s, t, x in self.lines],
            "id": self.key,
        }


@dataclass(frozen=True)
class Query:
    category: str = ""
    before: datetime | None = None
    since: datetime | None = None
    limit: int = DEFAULT_LIMIT


def parse_query(params: dict[str, str]) -> Query:
    """The timeline's query string; every bad value is refused with what is allowed."""
    errors: dict[str, str] = {}
    category = (params.get("category") or "").strip()
    if category and category not in CATEGORIES:
        errors["category"] = f"{category!r} is not one of {', '.join(CATEGORIES)} (or empty for all)."
    times: dict[str, datetime | None] = {}
    for name in ("before", "since"):
        text = (params.get(name) or "").strip()
        value = None
        if text:
            try:
                value = parse_datetime(text.replace(" ", "+"))  # a "+" in a query string is a space
            except ValueError:
                value = None
            if value is None or value.tzinfo is None:
                errors[name] = f"{text[:40]!r} is not an ISO 8601 time with its zone (2026-12-04T10:00:00Z)."
        times[name] = value
    limit_text = (params.get("limit") or str(DEFAULT_LIMIT)).strip()
    if not re.fullmatch(r"[0-9]{1,4}", limit_text) or not 1 <= int(limit_text) <= MAX_LIMIT:
        errors["limit"] = f"{limit_text[:20]!r} is not a number of entries from 1 to {MAX_LIMIT}."
    if errors:
        raise ValidationError(errors)
    return Query(category, times["before"], times["since"], int(limit_text))


def _window(q: Query, field_name: str) -> Q:
    where = Q()
    if q.before is not None:
        where &= Q(**{f"{field_name}__lt": q.before})
    if q.since is not None:
        where &= Q(**{f"{field_name}__gte": q.since})
    return where


def _events(app: App, instance: Instance | None, q: Query) -> Iterator[Entry]:
    rows = ContainerEvent.objects.filter(_window(q, "time"), app=app)
    if instance is not None:
        rows = rows.filter(slot=instance.slot)
    if q.category in ("deaths", "failures"):
        rows = rows.filter(kind__in=ContainerEvent.DEATHS)
    elif q.category == "lifecycle":
        rows = rows.filter(kind__in=LIFECYCLE)
    elif q.category:
        return
    for e in rows.order_by("-time", "-id")[: q.limit]:
        yield Entry(
            time=e.time,
            category="deaths" if e.kind in ContainerEvent.DEATHS else "lifecycle",
            kind=e.kind,
            title=e.summary,
            detail=f"on {e.host_name}, container {e.container_id[:12]}",
            instance=e.container_name,
            failed=e.kind in ContainerEvent.DEATHS,
            exit_code=e.exit_code,
            oom=e.oom,
            lines=e.lines,
            key=f"event:{e.pk}",
        )


def _operations(app: App, instance: Instance | None, q: Query) -> Iterator[Entry]:
    if q.category and q.category not in ("changes", "failures"):
        return
    rows = Operation.objects.filter(_window(q, "created_at"), app=app).select_related(
        "instance", "requested_by"
    )
    if instance is not None:
        # Its own operations, and the app's that touch every instance (deploys, scales, upgrades).
        rows = rows.filter(Q(instance=instance) | Q(instance=None))
    if q.category == "failures":
        rows = rows.filter(status=Operation.Status.FAILED)
    for op in rows.order_by("-created_at", "-id")[: q.limit]:
        state = "" if op.status == Operation.Status.SUCCEEDED else f" ({op.get_status_display().lower()})"
        yield Entry(
            time=op.created_at,
            category="changes",
            kind=op.kind,
            title=f"{op.get_kind_display()}{state}",
            detail="; ".join(x for x in (op.summary, op.error) if x)[:2000],
            instance=op.instance.container_name if op.instance else "",
            who=op.requested_by.username if op.requested_by else "",
            failed=op.status == Operation.Status.FAILED,
            key=f"operation:{op.pk}",
        )


def _execs(app: App, instance: Instance | None, q: Query) -> Iterator[Entry]:
    if q.category and q.category not in ("exec", "failures"):
        return
    rows = ExecSession.objects.filter(_window(q, "started_at"), app=app)
    if instance is not None:
        rows = rows.filter(instance_name=instance.container_name)
    if q.category == "failures":
        rows = rows.exclude(error="", timed_out=False)
    for s in rows.order_by("-started_at", "-id")[: q.limit]:
        terminal = s.kind == ExecSession.Kind.TERMINAL
        what = "Terminal session" if terminal else f"Ran {' '.join(s.argv)[:200]}"
        ended = f", exit code {s.exit_code}" if s.exit_code is not None else ""
        yield Entry(
            time=s.started_at,
            category="exec",
            kind="terminal" if terminal else "command",
            title=what,
            detail=(s.error or ("timed out" if s.timed_out else ""))[:2000] + ended,
            instance=s.instance_name,
            who=s.username,
            failed=bool(s.error) or s.timed_out,
            exit_code=s.exit_code,
            key=f"exec:{s.pk}",
        )


def timeline(app: App, q: Query, instance: Instance | None = None) -> list[Entry]:
    """Newest first, at most q.limit entries; the next page is `before` the last one's time."""
    sources = [_events(app, instance, q), _operations(app, instance, q), _execs(app, instance, q)]
    merged = heapq.merge(*sources, key=lambda e: e.time, reverse=True)
    return [e for _, e in zip(range(q.limit), merged, strict=False)]


def previous(instance: Instance) -> ContainerEvent | None:
    """The last lines of the instance's previous container (or of its container before its
    last death): the newest event of the slot that kept lines."""
    return (
        ContainerEvent.objects.filter(app_id=instance.app_id, slot=instance.slot)
        .exclude(lines=[])
        .order_by("-time", "-id")
        .first()
    )


def previous_lines(instance: Instance, query: LogQuery, stream: str = "both") -> list[LogLine]:
    """The kept lines of the instance's previous container, as `logs` gives lines (`tail` and
    `since` apply to them); a ValidationError when there are none."""
    kept = previous(instance)
    if kept is None:
        raise ValidationError(
            f"{instance.container_name} has no earlier container with kept lines: it has not died "
            "or been replaced since the portal records events."
        )
    lines = [LogLine(s, t, x) for s, t, x in kept.lines if stream in ("both", s)]
    if query.since is not None:
        lines = [line for line in lines if line.time and epoch(line.time) >= query.since]
    return lines[-query.tail :] if query.tail else lines


def markers(app: App, since: datetime, until: datetime, slot: int | None = None) -> list[dict[str, Any]]:
    """Deaths, OOM kills, crash loops and Docker's restarts as chart markers."""
    rows = ContainerEvent.objects.filter(
        app=app,
        time__gte=since,
        time__lt=until,
        kind__in=[*ContainerEvent.DEATHS, ContainerEvent.Kind.RESTARTED],
    )
    if slot is not None:
        rows = rows.filter(slot=slot)
    return [
        {"t": int(e.time.timestamp()), "kind": "oom" if e.oom else e.kind, "text": e.summary}
        for e in rows.order_by("time")[:MARKERS_MAX]
    ]
