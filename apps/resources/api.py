"""REST API for resource requests: file one for an app, list, approve, reject, cancel, retry.
Same services and permissions as the pages."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from apps.resources import services
from apps.resources.models import ResourceEvent, ResourceRequest
from portal.api import Pagination, service_call


class ResourceEventSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", default=None, read_only=True)

    class Meta:
        model = ResourceEvent
        fields = ["action", "user", "detail", "created_at"]


class ResourceRequestSerializer(serializers.ModelSerializer):
    app = serializers.CharField(source="app.slug", read_only=True)
    requested_by = serializers.CharField(source="requested_by.username", default=None, read_only=True)
    decided_by = serializers.CharField(source="decided_by.username", default=None, read_only=True)
    events = ResourceEventSerializer(many=True, read_only=True)

    class Meta:
        model = ResourceRequest
        fields = [
            "id",
            "app",
            "state",
            "old_memory_mb",
            "old_cpus",
            "memory_mb",
            "cpus",
            "reason",
            "auto_approved",
            "requested_by",
            "decided_by",
            "decided_at",
            "comment",
            "result",
            "created_at",
            "applied_at",
            "events",
        ]
        read_only_fields = fields


class RequestBodySerializer(serializers.Serializer):
    # Checked by the service, so every path gives the same messages.
    memory_mb = serializers.JSONField(required=False)
    cpus = serializers.JSONField(required=False)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class CommentSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, max_length=2000)


def file_request(request: Request, app: Any) -> Response:
    """POST /apps/{slug}/resource-requests/ (called from the apps API)."""
    body = RequestBodySerializer(data=request.data)
    body.is_valid(raise_exception=True)
    data = body.validated_data
    created = service_call(
        services.request_create,
        user=request.user,
        app=app,
        memory_mb=data.get("memory_mb", app.memory_mb),
        cpus=data.get("cpus", app.cpus),
        reason=data.get("reason", ""),
    )
    created.refresh_from_db()
    return Response(ResourceRequestSerializer(created).data, status=status.HTTP_201_CREATED)


class ResourceRequestViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Requests of the teams you are in (ops: all). `?state=pending` for the approvals inbox."""

    serializer_class = ResourceRequestSerializer
    pagination_class = Pagination

    def get_queryset(self) -> QuerySet[ResourceRequest]:
        qs = services.visible_to(self.request.user).prefetch_related("events__user")
        wanted = self.request.query_params.get("state")
        if wanted:
            if wanted not in ResourceRequest.State.values:
                raise ValidationError(
                    {
                        "state": f"{wanted!r} is not a state; use one of {', '.join(ResourceRequest.State.values)}."
                    }
                )
            qs = qs.filter(state=wanted)
        return qs

    @extend_schema(parameters=[OpenApiParameter("state", str)])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    def _decide(self, approve: bool) -> Response:
        target = self.get_object()
        body = CommentSerializer(data=self.request.data)
        body.is_valid(raise_exception=True)
        decided = service_call(
            services.request_decide,
            user=self.request.user,
            request=target,
            approve=approve,
            comment=body.validated_data.get("comment", ""),
        )
        return Response(self.get_serializer(decided).data)

    @extend_schema(request=CommentSerializer, responses=ResourceRequestSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str | None = None) -> Response:
        return self._decide(True)

    @extend_schema(request=CommentSerializer, responses=ResourceRequestSerializer)
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str | None = None) -> Response:
        return self._decide(False)

    @extend_schema(request=None, responses=ResourceRequestSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        done = service_call(services.request_cancel, user=request.user, request=self.get_object())
        return Response(self.get_serializer(done).data)

    @extend_schema(request=None, responses=ResourceRequestSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        done = service_call(services.request_retry, user=request.user, request=self.get_object())
        return Response(self.get_serializer(done).data)
