"""REST API: the audit trail for ops, with the page's filters (apps/audit/selectors.py)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, permissions, serializers, viewsets
from rest_framework.exceptions import ValidationError

from apps.audit.models import AuditEntry, Source
from apps.audit.selectors import FIELDS, audit_entries


class AuditEntrySerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_name", help_text='Username; "" for Slipway itself')
    team = serializers.CharField(source="team_slug")

    class Meta:
        model = AuditEntry
        fields = list(FIELDS)
        read_only_fields = fields


FILTER_PARAMETERS = [
    OpenApiParameter("q", str, description="Text in the summary, the object's name or the username"),
    OpenApiParameter("actor", str, description='A username; "-" for Slipway itself'),
    OpenApiParameter("action", str, description='An action ("app.scale") or its kind ("app")'),
    OpenApiParameter("object_type", str, description='e.g. "app", "host", "API token"'),
    OpenApiParameter("object_id", str),
    OpenApiParameter("source", str, enum=list(Source.values)),
    OpenApiParameter("team", str, description="A team's slug"),
    OpenApiParameter("since", str, description="YYYY-MM-DD or an ISO 8601 time"),
    OpenApiParameter("until", str, description="YYYY-MM-DD (the whole day) or an ISO 8601 time"),
]


@extend_schema_view(list=extend_schema(parameters=FILTER_PARAMETERS))
class AuditEntryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Every change a person or the portal made, newest first (ops only)."""

    serializer_class = AuditEntrySerializer
    permission_classes = [permissions.IsAdminUser]

    def get_queryset(self) -> QuerySet[AuditEntry]:
        if self.action != "list":
            return AuditEntry.objects.all()
        try:
            return audit_entries(self.request.query_params)
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict) from exc

    def filter_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset
