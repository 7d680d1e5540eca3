"""The audit trail, filtered: one function for the page, its export and the API, so the three
always agree on what a filter means."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.utils import timezone

from apps.audit.models import AuditEntry, Source

FILTERS = ("q", "actor", "action", "object_type", "object_id", "source", "team", "since", "until")
# What a row shows outside the portal (the API, the exports), in this order.
FIELDS = (
    "id",
    "at",
    "actor",
    "source",
    "address",
    "action",
    "object_type",
    "object_id",
    "object_repr",
    "team",
    "summary",
    "data",
)


def _moment(name: str, text: str, *, end: bool) -> dt.datetime:
    """A date (the whole day) or a date and time, in the portal's time zone."""
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            moment = dt.datetime.combine(day, dt.time.max if end else dt.time.min)
        else:
            moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            {name: f"{text!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM."}
        ) from None
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


def audit_entries(filters: Mapping[str, Any]) -> QuerySet[AuditEntry]:
    """Rows matching every given filter (empty ones are ignored), newest first. Refuses what it
    cannot read with ValidationError naming the filter and what it takes."""
    rows = AuditEntry.objects.all()
    values = {name: str(filters.get(name) or "").strip() for name in FILTERS}
    errors: dict[str, str] = {
        name: "A filter never holds a NUL character." for name, value in values.items() if "\x00" in value
    }
    if errors:
        raise ValidationError(errors)
    if values["q"]:
        text = values["q"]
        rows = rows.filter(
            Q(summary__icontains=text) | Q(object_repr__icontains=text) | Q(actor_name__icontains=text)
        )
    if values["actor"]:
        # "-" is the portal itself (no person).
        rows = rows.filter(actor_name="" if values["actor"] == "-" else values["actor"])
    if values["action"]:
        # "app" matches app.scale, app.create...; "app.scale" only itself.
        action = values["action"]
        rows = rows.filter(Q(action=action) | Q(action__startswith=action.rstrip(".") + "."))
    if values["object_type"]:
        rows = rows.filter(object_type=values["object_type"])
    if values["object_id"]:
        rows = rows.filter(object_id=values["object_id"])
    if values["source"]:
        if values["source"] not in Source.values:
            errors["source"] = f"{values['source']!r} is not a source; one of: {', '.join(Source.values)}."
        else:
            rows = rows.filter(source=values["source"])
    if values["team"]:
        rows = rows.filter(team_slug=values["team"])
    since = until = None
    for name, end in (("since", False), ("until", True)):
        if values[name]:
            try:
                moment = _moment(name, values[name], end=end)
            except ValidationError as exc:
                errors.update({key: " ".join(v) for key, v in exc.message_dict.items()})
                continue
            if end:
                until = moment
            else:
                since = moment
    if since is not None and until is not None and since > until:
        errors["until"] = "The end is before the start."
    if errors:
        raise ValidationError(errors)
    if since is not None:
        rows = rows.filter(at__gte=since)
    if until is not None:
        rows = rows.filter(at__lte=until)
    return rows.order_by("-id")


def choices() -> dict[str, list[str]]:
    """What the filters can pick from (actions and object types seen so far)."""
    return {
        "actions": sorted(AuditEntry.objects.values_list("action", flat=True).distinct()),
        "object_types": sorted(
            t for t in AuditEntry.objects.values_list("object_type", flat=True).distinct() if t
        ),
        "sources": list(Source.values),
    }
