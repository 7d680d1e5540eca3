"""The audit page for ops: search and filter the whole trail, newest first, 100 rows a page
(older ones by the id of the last row shown), and the same rows as CSV or JSON."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils.http import urlencode

from apps.audit.models import AuditEntry
from apps.audit.selectors import FIELDS, FILTERS, audit_entries, choices
from portal.http import HtmxHttpRequest

PAGE = 100


def _filters(request: HtmxHttpRequest) -> dict[str, str]:
    return {name: request.GET.get(name, "").strip() for name in FILTERS}


@staff_member_required
def audit_page(request: HtmxHttpRequest) -> HttpResponse:
    filters = _filters(request)
    errors: dict[str, list[str]] = {}
    rows: list[AuditEntry] = []
    before = request.GET.get("before", "")
    try:
        found = audit_entries(filters)
        if before:
            if not before.isdigit():
                raise ValidationError({"before": f"{before!r} is not a row number."})
            found = found.filter(id__lt=int(before))
        rows = list(found.select_related("actor")[: PAGE + 1])
    except ValidationError as exc:
        errors = exc.message_dict
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    query = urlencode({k: v for k, v in filters.items() if v})
    context: dict[str, Any] = {
        "rows": rows,
        "filters": filters,
        "errors": errors,
        "older": f"?{query}&before={rows[-1].pk}" if more else "",
        "query": query,
        "choices": choices(),
    }
    template = "audit/audit.html#rows" if request.htmx and not request.htmx.boosted else "audit/audit.html"
    # 422: htmx swaps it in (base.html's responseHandling), so the message shows where the rows were.
    return render(request, template, context, status=422 if errors else 200)


def _record(row: AuditEntry) -> dict[str, Any]:
    return {
        "id": row.pk,
        "at": row.at.isoformat(),
        "actor": row.actor_name or None,
        "source": row.source,
        "address": row.address,
        "action": row.action,
        "object_type": row.object_type,
        "object_id": row.object_id,
        "object_repr": row.object_repr,
        "team": row.team_slug or None,
        "summary": row.summary,
        "data": row.data,
    }


# A cell starting with one of these is a formula to a spreadsheet (CSV injection): an object
# named `=HYPERLINK(...)` must stay text, so such a cell gets a leading apostrophe.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


class _Echo:
    def write(self, value: str) -> str:
        return value


@staff_member_required
def audit_export(request: HtmxHttpRequest, fmt: str) -> HttpResponse | StreamingHttpResponse:
    """Every matching row, oldest first, streamed (the database is read in chunks)."""
    if fmt not in ("csv", "json"):
        raise Http404("Export as audit/export.csv or audit/export.json.")
    try:
        found = audit_entries(_filters(request))
    except ValidationError as exc:
        return HttpResponse(
            json.dumps({"errors": exc.message_dict}), status=400, content_type="application/json"
        )

    def records() -> Iterator[dict[str, Any]]:
        yield from (_record(row) for row in found.order_by("id").iterator(chunk_size=1000))

    if fmt == "csv":
        writer = csv.writer(_Echo())

        def lines() -> Iterator[str]:
            yield writer.writerow(FIELDS)
            for item in records():
                item["data"] = json.dumps(item["data"], sort_keys=True)
                yield writer.writerow([_cell(item[c]) for c in FIELDS])

        response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    else:

        def chunks() -> Iterator[str]:
            yield "["
            for number, item in enumerate(records()):
                yield ("," if number else "") + "\n" + json.dumps(item)
            yield "\n]\n"

        response = StreamingHttpResponse(chunks(), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="slipway-audit.{fmt}"'
    return response
