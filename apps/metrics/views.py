"""`/metrics` for Prometheus, behind a bearer token (METRICS_TOKEN)."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from apps.metrics.exporter import exposition


@require_GET
def prometheus(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if not token:
        return HttpResponse(
            "The metrics endpoint is off: set METRICS_TOKEN, and give Prometheus the same token "
            "(authorization: credentials).\n",
            status=404,
            content_type="text/plain; charset=utf-8",
        )
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        response = HttpResponse(
            "Send the METRICS_TOKEN as a bearer token: Authorization: Bearer <token>.\n",
            status=401,
            content_type="text/plain; charset=utf-8",
        )
        response["WWW-Authenticate"] = 'Bearer realm="slipway metrics"'
        return response
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
