"""REST API: an app's and an instance's timeline (mounted on their viewsets)."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from apps.applications.models import App
from apps.events import selectors
from apps.instances.models import Instance

TIMELINE_PARAMETERS = [
    OpenApiParameter(
        "category", str, enum=list(selectors.CATEGORIES), description="Only these entries (default: all)"
    ),
    OpenApiParameter("before", str, description="Older than this ISO 8601 time (the next page)"),
    OpenApiParameter("since", str, description="From this ISO 8601 time on"),
    OpenApiParameter(
        "limit",
        int,
        description=f"At most this many (default {selectors.DEFAULT_LIMIT}, at most {selectors.MAX_LIMIT})",
    ),
]
TIMELINE_PARAMETERS_APP = [
    *TIMELINE_PARAMETERS,
    OpenApiParameter("slot", int, description="Only what concerns this instance (by slot)"),
]


def timeline_response(request: Request, app: App, instance: Instance | None = None) -> Response:
    """{"results": [...newest first], "next_before": the `before` of the next page, or null}."""
    params = {k: request.query_params.get(k, "") for k in ("category", "before", "since", "limit")}
    try:
        query = selectors.parse_query(params)
    except DjangoValidationError as exc:
        raise ValidationError(exc.message_dict) from exc
    slot_text = request.query_params.get("slot", "").strip()
    if instance is None and slot_text:
        # Plain digits only ("²" is a digit to str.isdigit, and a huge number overflows the column).
        number = re.fullmatch(r"[0-9]{1,9}", slot_text)
        instance = Instance.objects.filter(app=app, slot=int(slot_text)).first() if number else None
        if instance is None:
            slots = ", ".join(str(s) for s in app.instance_set.values_list("slot", flat=True)) or "none"
            raise ValidationError(
                {"slot": f"{slot_text[:20]!r} is not a slot of {app.slug} (slots: {slots})."}
            )
    entries = selectors.timeline(app, query, instance)
    full = len(entries) == query.limit
    return Response(
        {
            "results": [e.as_dict() for e in entries],
            "next_before": entries[-1].time.isoformat() if full else None,
        }
    )
