"""What the REST modules share: calling a service and turning its Django errors into DRF's, and
the pagination of their lists."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request


def service_call(fn: Any, **kwargs: Any) -> Any:
    """Run a service; its PermissionDenied becomes a 403 and its ValidationError a 400, with
    the service's own messages."""
    try:
        return fn(**kwargs)
    except DjangoPermissionDenied as exc:
        raise PermissionDenied(str(exc)) from exc
    except DjangoValidationError as exc:
        raise ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        ) from exc


class SlugRelatedField(serializers.SlugRelatedField):
    """DRF's, with a 400 for a NUL byte: no slug or name holds one, and PostgreSQL cannot even
    compare text that does (a DataError, so a 500, where SQLite just finds nothing)."""

    default_error_messages = {"nul": "A {slug_name} never holds a NUL byte (got {value!r})."}

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str) and "\x00" in data:
            self.fail("nul", slug_name=self.slug_field, value=data)
        return super().to_internal_value(data)


class Pagination(LimitOffsetPagination):
    """DRF's `?limit=&offset=`, with a largest page, and a 400 for a value that is not a whole
    number in range (DRF's own ignores it, and passes a limit past 2**63 on to the database,
    which fails with a 500)."""

    max_limit = 1000

    def get_limit(self, request: Request) -> int | None:
        return self._whole_number(request, self.limit_query_param, self.default_limit, 1, self.max_limit)

    def get_offset(self, request: Request) -> int:
        # Past the last row is an empty page, however far: no upper bound is needed.
        return self._whole_number(request, self.offset_query_param, 0, 0, None) or 0

    @staticmethod
    def _whole_number(
        request: Request, name: str, default: int | None, low: int, high: int | None
    ) -> int | None:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        allowed = (
            f"a whole number from {low} to {high}"
            if high is not None
            else f"a whole number of at least {low}"
        )
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            shown = raw if len(raw) <= 40 else raw[:40] + "…"
            raise ValidationError({name: f"{shown!r} is not allowed; give {allowed}."})
        return value

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        bounds = {
            self.limit_query_param: {"minimum": 1, "maximum": self.max_limit},
            self.offset_query_param: {"minimum": 0},
        }
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"].update(bounds.get(parameter["name"], {}))
        return parameters
