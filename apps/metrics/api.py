"""What the metrics endpoints of the apps, instances and hosts APIs share: their parameters."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

from apps.metrics.selectors import Window, window

METRICS_PARAMETERS = [
    OpenApiParameter("range", str, description="1h, 24h, 7d or 30d (instead of since)"),
    OpenApiParameter("since", str, description="ISO 8601 time, or how long ago: 90m, 24h, 7d"),
    OpenApiParameter("step", str, description="Bucket length: seconds, or 10s, 5m, 1h"),
]


def window_of(request: Request) -> Window:
    try:
        return window(
            range_name=request.query_params.get("range"),
            since=request.query_params.get("since"),
            step=request.query_params.get("step"),
        )
    except DjangoValidationError as exc:
        raise ValidationError(exc.message_dict) from exc
