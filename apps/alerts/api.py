"""REST API: alerts, their rules, webhooks (and their deliveries), notifications."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.views.decorators.debug import sensitive_variables
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts import permissions
from apps.accounts.models import Team
from apps.alerts import services
from apps.alerts.models import Alert, Delivery, Kind, Notification, Rule, Webhook
from portal.api import Pagination, SlugRelatedField, service_call


def _text_param(request: Request, name: str) -> str:
    """A query parameter as text; a NUL byte is refused (no slug or kind holds one, and
    PostgreSQL cannot even compare text that does)."""
    value = request.query_params.get(name, "")
    if "\x00" in value:
        raise ValidationError({name: f"A {name} never holds a NUL byte."})
    return value


class AlertSerializer(serializers.ModelSerializer):
    instance = serializers.SerializerMethodField()
    host = serializers.SerializerMethodField()

    def get_instance(self, alert: Alert) -> str | None:
        return alert.instance.container_name if alert.instance else None

    def get_host(self, alert: Alert) -> str | None:
        return alert.host.name if alert.host else None

    class Meta:
        model = Alert
        fields = [
            "id",
            "kind",
            "state",
            "subject",
            "summary",
            "detail",
            "app_slug",
            "instance",
            "host",
            "started_at",
            "last_seen_at",
            "last_notified_at",
            "notified",
            "resolved_at",
        ]
        read_only_fields = fields


class AlertViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Alerts of the user's teams' apps (ops: all, with the hosts'), newest first; `state=firing`
    or `resolved`, `kind=`, `app=` narrow it."""

    serializer_class = AlertSerializer
    pagination_class = Pagination

    @extend_schema(
        parameters=[
            OpenApiParameter("state", str, enum=list(Alert.State.values)),
            OpenApiParameter("kind", str, enum=list(Kind.values)),
            OpenApiParameter("app", str, description="An app's slug"),
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Alert]:
        rows = services.alerts_visible_to(self.request.user).select_related("instance", "host")
        params = self.request.query_params
        for name, allowed in (("state", Alert.State.values), ("kind", Kind.values)):
            value = params.get(name, "")
            if value and value not in allowed:
                raise ValidationError({name: f"{value[:40]!r} is not one of {', '.join(allowed)}."})
            if value:
                rows = rows.filter(**{name: value})
        app = _text_param(self.request, "app")
        if app:
            rows = rows.filter(app_slug=app)
        return rows


class RuleSerializer(serializers.ModelSerializer):
    team = SlugRelatedField(slug_field="slug", queryset=Team.objects.all(), allow_null=True, required=False)
    kind = serializers.ChoiceField(choices=Kind.choices)
    is_default = serializers.SerializerMethodField(help_text="Ops' default (no team rule of its own)")
    for_seconds = serializers.IntegerField(min_value=0, max_value=7 * 86400, required=False)
    repeat_minutes = serializers.IntegerField(min_value=0, max_value=7 * 1440, required=False)
    threshold_pct = serializers.IntegerField(min_value=1, max_value=100, required=False, allow_null=True)

    def get_is_default(self, rule: Rule) -> bool:
        return rule.team_id is None

    class Meta:
        model = Rule
        fields = ["id", "team", "kind", "is_default", *services.EDITABLE, "updated_at"]
        read_only_fields = ["id", "is_default", "updated_at"]


class RuleViewSet(viewsets.GenericViewSet):
    """The rules in force: GET `?team=slug` gives that team's (its own, or ops' default for the
    kinds it has not set); without it, ops' defaults. POST sets one ({"kind", "team", ...}):
    ops change defaults, a team's lead its team's; DELETE `?team=&kind=` returns the team to the
    default."""

    serializer_class = RuleSerializer

    def _team(self, request: Request, slug: str | None) -> Team | None:
        if not slug:
            return None
        if "\x00" in slug:
            raise ValidationError({"team": "A team's slug never holds a NUL byte."})
        team = permissions.teams_of(request.user).filter(slug=slug).first()
        if team is None:
            raise NotFound(f"No team {slug!r} of yours.")
        return team

    @extend_schema(parameters=[OpenApiParameter("team", str, description="A team's slug")])
    def list(self, request: Request) -> Response:
        team = self._team(request, request.query_params.get("team"))
        return Response(RuleSerializer(services.rules_for(team), many=True).data)

    def create(self, request: Request) -> Response:
        body = RuleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        team = data.pop("team", None)
        if team is not None:
            team = self._team(request, team.slug)
        kind = data.pop("kind")
        rule = service_call(services.rule_save, user=request.user, kind=kind, team=team, **data)
        return Response(RuleSerializer(rule).data, status=status.HTTP_200_OK)

    @extend_schema(
        parameters=[
            OpenApiParameter("team", str, required=True),
            OpenApiParameter("kind", str, required=True),
        ]
    )
    @action(detail=False, methods=["delete"], url_path="reset")
    def reset(self, request: Request) -> Response:
        team = self._team(request, request.query_params.get("team"))
        if team is None:
            raise ValidationError({"team": "Which team goes back to the defaults (its slug)."})
        service_call(
            services.rule_reset, user=request.user, kind=request.query_params.get("kind", ""), team=team
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookSerializer(serializers.ModelSerializer):
    team = SlugRelatedField(slug_field="slug", queryset=Team.objects.all(), allow_null=True, required=False)
    topics = serializers.ListField(child=serializers.CharField(), help_text="alerts, lifecycle")
    url = serializers.CharField(max_length=500)
    secret = serializers.SerializerMethodField(help_text="Shown once, in the answer that made it")

    def get_secret(self, webhook: Webhook) -> str | None:
        return webhook.secret_opened() if self.context.get("new") else None

    class Meta:
        model = Webhook
        fields = ["id", "team", "name", "url", "topics", "active", "secret", "created_at"]
        read_only_fields = ["id", "active", "secret", "created_at"]


class DeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = Delivery
        fields = [
            "id",
            "event",
            "status",
            "attempts",
            "response_status",
            "error",
            "next_attempt_at",
            "created_at",
            "delivered_at",
            "payload",
        ]
        read_only_fields = fields


class WebhookViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """Where alerts and lifecycle events are POSTed, signed with the webhook's secret (shown once,
    when it is made). A team's lead adds the team's; ops add ones for the whole fleet."""

    serializer_class = WebhookSerializer
    pagination_class = Pagination

    def get_queryset(self) -> QuerySet[Webhook]:
        return services.webhooks_visible_to(self.request.user).select_related("team")

    # The answer holds the new secret, opened: an error report shows no variable of this frame.
    @sensitive_variables()
    def create(self, request: Request) -> Response:
        body = WebhookSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        team = data.get("team")
        if team is not None and not permissions.teams_of(request.user).filter(pk=team.pk).exists():
            raise NotFound(f"No team {team.slug!r} of yours.")
        webhook = service_call(
            services.webhook_create,
            user=request.user,
            team=team,
            name=data["name"],
            url=data["url"],
            topics=data["topics"],
        )
        return Response(
            WebhookSerializer(webhook, context={"new": True}).data, status=status.HTTP_201_CREATED
        )

    def perform_destroy(self, instance: Webhook) -> None:
        service_call(services.webhook_delete, user=self.request.user, webhook=instance)

    @action(detail=True, methods=["get"])
    def deliveries(self, request: Request, pk: str | None = None) -> Response:
        """The last 100 deliveries, newest first: status, attempts, the receiver's answer."""
        webhook = self.get_object()
        return Response(DeliverySerializer(webhook.deliveries.all()[:100], many=True).data)


class NotificationSerializer(serializers.ModelSerializer):
    alert = AlertSerializer(read_only=True)

    class Meta:
        model = Notification
        fields = ["id", "text", "created_at", "read_at", "alert"]
        read_only_fields = fields


class ReadSerializer(serializers.Serializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1),
        required=False,
        max_length=1000,
        help_text="Omitted: all",
    )


class NotificationViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The user's own notifications, newest first (`unread=1`: only unread); POST read/ marks
    them read."""

    serializer_class = NotificationSerializer
    pagination_class = Pagination

    def get_queryset(self) -> QuerySet[Notification]:
        rows = Notification.objects.filter(user_id=int(self.request.user.pk or 0)).select_related(
            "alert__instance", "alert__host"
        )
        if self.request.query_params.get("unread") in ("1", "true", "yes"):
            rows = rows.filter(read_at=None)
        return rows

    @extend_schema(request=ReadSerializer, responses={200: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["post"])
    def read(self, request: Request) -> Response:
        body = ReadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        marked = services.mark_read(request.user, body.validated_data.get("ids"))
        return Response({"marked": marked, "unread": services.unread(request.user).count()})
