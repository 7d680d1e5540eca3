"""REST API for moving a VM's app: the same steps and services as the wizard pages.

POST /relocations/ registers a VM; then confirm-key, install-key (optional), inspect, plan
(GET suggests, PUT saves), run, cancel. GET /relocations/{id}/ shows the state and the
current run's steps; a relocation of another team is a 404."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts.models import Team
from apps.hosts.transport import fingerprint
from apps.relocations import plan as planning
from apps.relocations import services
from apps.relocations.models import Inspection, Relocation, Step
from portal.api import Pagination, SlugRelatedField, service_call


class StepSerializer(serializers.ModelSerializer):
    class Meta:
        model = Step
        fields = [
            "name",
            "state",
            "done",
            "total",
            "percent",
            "detail",
            "started_at",
            "finished_at",
            "seconds",
        ]
        read_only_fields = fields


class InspectionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Inspection
        fields = ["id", "created_at", "error", "report"]
        read_only_fields = fields


class RelocationSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug", read_only=True)
    app = serializers.CharField(source="app.slug", default=None, read_only=True)
    host = serializers.CharField(source="host.name", default=None, read_only=True)
    offered_fingerprint = serializers.SerializerMethodField()
    pinned_fingerprint = serializers.SerializerMethodField()
    plan = serializers.SerializerMethodField()
    steps = serializers.SerializerMethodField()

    class Meta:
        model = Relocation
        fields = [
            "id",
            "team",
            "name",
            "address",
            "port",
            "ssh_user",
            "state",
            "offered_fingerprint",
            "pinned_fingerprint",
            "key_confirmed_at",
            "key_installed_at",
            "plan",
            "planned_at",
            "app",
            "host",
            "attempt",
            "error",
            "steps",
            "created_at",
            "updated_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_offered_fingerprint(self, obj: Relocation) -> str:
        return fingerprint(obj.offered_key)

    def get_pinned_fingerprint(self, obj: Relocation) -> str | None:
        return fingerprint(obj.host_key) if obj.host_key else None

    def get_plan(self, obj: Relocation) -> dict[str, Any]:
        # Secrets by name only: their values are sealed and never leave the portal again.
        return planning.shown(obj.plan)

    def get_steps(self, obj: Relocation) -> list[dict[str, Any]]:
        return StepSerializer(services.steps_of(obj), many=True).data  # type: ignore[return-value]


class RegisterSerializer(serializers.Serializer):
    team = SlugRelatedField(slug_field="slug", queryset=Team.objects.all())
    name = serializers.CharField(max_length=60)
    address = serializers.CharField(max_length=64)
    port = serializers.IntegerField(required=False, default=22)
    ssh_user = serializers.CharField(required=False, default="root", max_length=32)


class FingerprintSerializer(serializers.Serializer):
    fingerprint = serializers.CharField(max_length=120)


class PasswordSerializer(serializers.Serializer):
    password = serializers.CharField(max_length=1000, trim_whitespace=False)


class PlanSerializer(serializers.Serializer):
    # Checked field by field by the service (plan.validate), so every path gives the same messages.
    # "secrets": NAME: "value" (sealed on saving, shown back masked; "********" keeps a saved one).
    plan = serializers.JSONField()


class RelocationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = RelocationSerializer
    pagination_class = Pagination

    def get_queryset(self) -> QuerySet[Relocation]:
        return services.visible_to(self.request.user)

    @extend_schema(request=RegisterSerializer, responses=RelocationSerializer)
    def create(self, request: Request) -> Response:
        body = RegisterSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        made = service_call(services.relocation_register, user=request.user, **body.validated_data)
        return Response(self.get_serializer(made).data, status=status.HTTP_201_CREATED)

    def _answer(self, relocation: Relocation, code: int = status.HTTP_200_OK) -> Response:
        relocation.refresh_from_db()
        return Response(self.get_serializer(relocation).data, status=code)

    @extend_schema(request=FingerprintSerializer, responses=RelocationSerializer)
    @action(detail=True, methods=["post"], url_path="confirm-key")
    def confirm_key(self, request: Request, pk: str | None = None) -> Response:
        target = self.get_object()  # another team's VM is a 404 before its body is read
        body = FingerprintSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        relocation = service_call(
            services.relocation_confirm_key,
            user=request.user,
            relocation=target,
            fingerprint_seen=body.validated_data["fingerprint"],
        )
        return self._answer(relocation)

    @extend_schema(request=PasswordSerializer, responses=RelocationSerializer)
    @action(detail=True, methods=["post"], url_path="install-key")
    def install_key(self, request: Request, pk: str | None = None) -> Response:
        target = self.get_object()
        body = PasswordSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        relocation = service_call(
            services.relocation_install_key,
            user=request.user,
            relocation=target,
            password=body.validated_data["password"],
        )
        return self._answer(relocation)

    @extend_schema(request=None, responses=RelocationSerializer)
    @action(detail=True, methods=["post"])
    def inspect(self, request: Request, pk: str | None = None) -> Response:
        relocation = service_call(
            services.relocation_inspect, user=request.user, relocation=self.get_object()
        )
        return self._answer(relocation, status.HTTP_202_ACCEPTED)

    @extend_schema(responses=InspectionSerializer(many=True))
    @action(detail=True, methods=["get"])
    def inspections(self, request: Request, pk: str | None = None) -> Response:
        rows = self.get_object().inspections.order_by("-created_at", "-id")
        return Response(InspectionSerializer(rows, many=True).data)

    @extend_schema(request=PlanSerializer, responses=PlanSerializer)
    @action(detail=True, methods=["get", "put"])
    def plan(self, request: Request, pk: str | None = None) -> Response:
        """GET: the saved plan, or the one suggested by the last inspection. PUT {"plan": {...}}
        checks it like an app and saves it. Secrets are shown masked; sent back masked, a saved
        one keeps its value, and a suggested one (its value never copied from the VM) must be
        typed, or moved to env, or left out."""
        relocation = self.get_object()
        if request.method == "GET":
            current = relocation.plan or service_call(services.plan_suggestion, relocation=relocation)
            return Response({"plan": planning.shown(current), "saved": bool(relocation.plan)})
        body = PlanSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        relocation = service_call(
            services.relocation_plan,
            user=request.user,
            relocation=relocation,
            plan=body.validated_data["plan"],
        )
        return Response({"plan": planning.shown(relocation.plan), "saved": True})

    @extend_schema(request=None, responses=RelocationSerializer)
    @action(detail=True, methods=["post"])
    def run(self, request: Request, pk: str | None = None) -> Response:
        relocation = service_call(services.relocation_run, user=request.user, relocation=self.get_object())
        return self._answer(relocation, status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses=RelocationSerializer)
    @action(detail=True, methods=["post"])
    def rollback(self, request: Request, pk: str | None = None) -> Response:
        """Try again a rollback that did not finish (state "failed")."""
        relocation = service_call(
            services.relocation_rollback, user=request.user, relocation=self.get_object()
        )
        return self._answer(relocation, status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses=RelocationSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        relocation = service_call(services.relocation_cancel, user=request.user, relocation=self.get_object())
        return self._answer(relocation)
