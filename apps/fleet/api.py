from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts.permissions import is_ops
from apps.fleet import drain as draining
from apps.fleet import prepare as preparing
from apps.fleet.models import Drain, Preparation
from apps.hosts import gateway, services
from apps.hosts.models import Host
from apps.metrics.api import METRICS_PARAMETERS, window_of
from apps.metrics.selectors import host_metrics
from portal.api import Pagination


class HostSerializer(serializers.ModelSerializer):
    fingerprint = serializers.CharField(read_only=True)
    offered_fingerprint = serializers.CharField(read_only=True)
    agent_version = serializers.SerializerMethodField(
        help_text="The hostagent version on the host, once probed."
    )
    authorized_keys_line = serializers.SerializerMethodField(
        help_text="The line for the account's authorized_keys that lets the portal in (it must be root)."
    )

    def get_agent_version(self, host: Host) -> int | None:
        version = (host.facts or {}).get("agent_version")
        return version if isinstance(version, int) else None

    def get_authorized_keys_line(self, host: Host) -> str:
        return gateway.portal_public_key()

    class Meta:
        model = Host
        fields = [
            "id",
            "name",
            "address",
            "ssh_port",
            "ssh_user",
            "docker_transport",
            "docker_socket",
            "volume_root",
            "state",
            "cpus",
            "memory_mb",
            "fingerprint",
            "offered_fingerprint",
            "last_seen",
            "last_checked",
            "last_error",
            "checks",
            "checks_ok",
            "checks_override",
            "agent_version",
            "authorized_keys_line",
        ]
        read_only_fields = [
            "state",
            "cpus",
            "memory_mb",
            "last_seen",
            "last_checked",
            "last_error",
            "checks",
            "checks_ok",
            "checks_override",
        ]


class OverrideSerializer(serializers.Serializer):
    reason = serializers.CharField(
        allow_blank=True, help_text="Why the host may take instances anyway; empty ends it."
    )


class ConfirmKeySerializer(serializers.Serializer):
    # The SHA256:… value, or the whole line `ssh-keygen -lf` prints.
    fingerprint = serializers.CharField(max_length=300)


class IsStaffOrReadOnly(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return bool(request.user and request.user.is_authenticated)
        return is_ops(request.user)


def _as_drf(exc: DjangoValidationError) -> ValidationError:
    return ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages})


class DrainSerializer(serializers.ModelSerializer):
    class Meta:
        model = Drain
        fields = [
            "id",
            "state",
            "total",
            "done",
            "percent",
            "current",
            "log",
            "error",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields


class PreparationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Preparation
        fields = ["id", "state", "steps", "restart_dockerd", "error", "created_at", "finished_at"]
        read_only_fields = fields


class PrepareRequestSerializer(serializers.Serializer):
    restart_dockerd = serializers.BooleanField(
        default=False,
        help_text="Ops confirm dockerd may be restarted to take its settings (log rotation, live-restore); "
        "dockerd reloads them first, which turns live-restore on, so instances keep running.",
    )


class PrepareAnswerSerializer(serializers.Serializer):
    """What prepare answers: the host (with its checks), and its latest preparation (if any)."""

    host = HostSerializer()
    preparation = PreparationSerializer(allow_null=True)


class DrainAnswerSerializer(serializers.Serializer):
    """What drain and activate answer: the host, and its latest drain (if any)."""

    host = HostSerializer()
    drain = DrainSerializer(allow_null=True)


class HostViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Hosts of the fleet. Everyone signed in may list them; only ops register and confirm."""

    queryset = Host.objects.all()
    serializer_class = HostSerializer
    permission_classes = [IsStaffOrReadOnly]
    pagination_class = Pagination

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            host = services.host_register(**serializer.validated_data, user=request.user)
        except DjangoValidationError as exc:
            raise _as_drf(exc) from exc
        return Response(self.get_serializer(host).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=METRICS_PARAMETERS, responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"], permission_classes=[permissions.IsAdminUser])
    def metrics(self, request: Request, pk: str | None = None) -> Response:
        """Ops: used (measured) against reserved (limits) against capacity."""
        host = self.get_object()
        return Response(host_metrics(host, window_of(request)))

    @extend_schema(request=ConfirmKeySerializer, responses=HostSerializer)
    @action(detail=True, methods=["post"], url_path="confirm-key")
    def confirm_key(self, request: Request, pk: str | None = None) -> Response:
        host = self.get_object()
        body = ConfirmKeySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            host = services.host_confirm_key(
                host=host, confirmed_fingerprint=body.validated_data["fingerprint"], user=request.user
            )
        except DjangoValidationError as exc:
            raise _as_drf(exc) from exc
        return Response(self.get_serializer(host).data)

    @extend_schema(request=None, responses=HostSerializer)
    @action(detail=True, methods=["post"])
    def probe(self, request: Request, pk: str | None = None) -> Response:
        host = services.host_probe(host=self.get_object())
        return Response(self.get_serializer(host).data)

    @extend_schema(request=None, responses=HostSerializer)
    @action(detail=True, methods=["post"], url_path="fix-network")
    def fix_network(self, request: Request, pk: str | None = None) -> Response:
        try:
            host = services.host_fix_network(host=self.get_object(), user=request.user)
        except DjangoValidationError as exc:
            raise _as_drf(exc) from exc
        return Response(self.get_serializer(host).data)

    @extend_schema(request=OverrideSerializer, responses=HostSerializer)
    @action(detail=True, methods=["post"])
    def override(self, request: Request, pk: str | None = None) -> Response:
        body = OverrideSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            host = services.host_override_checks(
                host=self.get_object(), user=request.user, reason=body.validated_data["reason"]
            )
        except DjangoValidationError as exc:
            raise _as_drf(exc) from exc
        return Response(self.get_serializer(host).data)

    def _drain_answer(self, host: Host) -> Response:
        drain = host.drains.first()
        return Response(
            {"host": self.get_serializer(host).data, "drain": DrainSerializer(drain).data if drain else None}
        )

    @extend_schema(request=None, responses=DrainAnswerSerializer)
    @action(detail=True, methods=["get", "post"])
    def drain(self, request: Request, pk: str | None = None) -> Response:
        """GET: the latest drain and its progress. POST: drain the host (ops): its instances are
        moved to other hosts one at a time; it takes nothing new meanwhile."""
        host = self.get_object()
        if request.method == "POST":
            try:
                draining.host_drain(user=request.user, host=host)
            except DjangoValidationError as exc:
                raise _as_drf(exc) from exc
            host.refresh_from_db()
        return self._drain_answer(host)

    @extend_schema(request=PrepareRequestSerializer, responses=PrepareAnswerSerializer)
    @action(detail=True, methods=["get", "post"])
    def prepare(self, request: Request, pk: str | None = None) -> Response:
        """GET: the latest preparation, step by step. POST: prepare the host (ops): install the
        agent, run the doctor, apply the safe fixes, load the base images it lacks, check again;
        with `restart_dockerd`, also write dockerd's settings and restart it."""
        host = self.get_object()
        if request.method == "POST":
            given = PrepareRequestSerializer(data=request.data)
            given.is_valid(raise_exception=True)
            try:
                preparing.host_prepare(
                    user=request.user, host=host, restart_dockerd=given.validated_data["restart_dockerd"]
                )
            except DjangoValidationError as exc:
                raise _as_drf(exc) from exc
            host.refresh_from_db()
        preparation = host.preparations.first()
        return Response(
            {
                "host": self.get_serializer(host).data,
                "preparation": PreparationSerializer(preparation).data if preparation else None,
            }
        )

    @extend_schema(request=None, responses=DrainAnswerSerializer)
    @action(detail=True, methods=["post"])
    def activate(self, request: Request, pk: str | None = None) -> Response:
        """A draining host takes instances again (a drain under way stops after its current move)."""
        try:
            host = draining.host_activate(user=request.user, host=self.get_object())
        except DjangoValidationError as exc:
            raise _as_drf(exc) from exc
        return self._drain_answer(host)
