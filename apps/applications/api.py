"""REST API for apps, instances, operations and base images. Same services, same permissions
as the pages: another team's app is a 404."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.http.response import HttpResponseBase
from django.views.decorators.debug import sensitive_variables
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import mixins, parsers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts import permissions
from apps.accounts.models import Team
from apps.applications import releases, secret_env, selectors, services
from apps.applications.models import App, BaseImage, HealthCheck
from apps.applications.release_api import ReleaseActions, conflict
from apps.console.api import (
    APP_LOG_PARAMETERS,
    LOG_PARAMETERS,
    LOG_RENDERERS,
    LOG_RESPONSES,
    ExecBodySerializer,
    ExecResultSerializer,
    NamedCommandSerializer,
    app_logs_response,
    logs_response,
    run_exec,
)
from apps.console.api import commands as app_commands
from apps.events.api import TIMELINE_PARAMETERS, TIMELINE_PARAMETERS_APP, timeline_response
from apps.hosts.models import Host
from apps.images import publish
from apps.instances.models import Instance, Operation
from apps.metrics.api import METRICS_PARAMETERS, window_of
from apps.metrics.selectors import app_metrics
from apps.network.models import IPAllocation, IPPool
from apps.network.services import address_request
from apps.resources.api import RequestBodySerializer, ResourceRequestSerializer, file_request
from portal.api import SlugRelatedField


def drf_errors(exc: DjangoValidationError) -> ValidationError:
    return ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages})


class ServiceErrors:
    """Turn the services' Django errors into DRF's 400 and 403 (409: another deploy runs)."""

    def call(self, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except releases.DeployRunning as exc:
            raise conflict(exc) from exc
        except DjangoValidationError as exc:
            raise drf_errors(exc) from exc
        except DjangoPermissionDenied as exc:
            raise PermissionDenied(str(exc)) from exc


class BaseImageSerializer(serializers.ModelSerializer):
    def get_hosts(self, image: BaseImage) -> list[str]:
        return [host.name for host in image.hosts.all()]

    reference = serializers.CharField(read_only=True)
    hosts = serializers.SerializerMethodField()

    class Meta:
        model = BaseImage
        fields = [
            "id",
            "name",
            "tag",
            "reference",
            "runtime",
            "description",
            "default_command",
            "default_port",
            "deprecated",
            "recommended",
            "withdrawn",
            "state",
            "digest",
            "size",
            "recipe",
            "build_step",
            "build_log",
            "load_progress",
            "build_error",
            "hosts",
        ]


class OperationSerializer(serializers.ModelSerializer):
    app = serializers.CharField(source="app_slug", read_only=True)
    requested_by = serializers.CharField(source="requested_by.username", default=None, read_only=True)
    instance = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = Operation
        fields = [
            "id",
            "app",
            "instance",
            "kind",
            "status",
            "summary",
            "params",
            "error",
            "requested_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class InstanceSerializer(serializers.ModelSerializer):
    app = serializers.CharField(source="app.slug", read_only=True)
    host = serializers.CharField(source="host.name", read_only=True)
    name = serializers.CharField(source="container_name", read_only=True)
    endpoint = serializers.CharField(read_only=True)
    image = serializers.SerializerMethodField(help_text="The base image version the instance runs")

    def get_image(self, instance: Instance) -> str:
        return (instance.image or instance.app.base_image).reference

    class Meta:
        model = Instance
        fields = [
            "id",
            "app",
            "slot",
            "name",
            "host",
            "image",
            "container_id",
            "state",
            "desired_state",
            "address",
            "endpoint",
            "memory_mb",
            "cpus",
            "last_error",
            "updated_at",
        ]
        read_only_fields = fields


class BaseImageField(serializers.PrimaryKeyRelatedField):
    """A base image by id, or by its reference (`slipway/busybox:1`) like everywhere else."""

    def to_internal_value(self, data: Any) -> BaseImage:
        if isinstance(data, str) and "\x00" in data:
            raise ValidationError(f"{data!r}: a base image is named without NUL bytes.")
        if isinstance(data, str) and not (data.isascii() and data.isdigit()):
            name, _, tag = data.rpartition(":")
            found = BaseImage.objects.filter(name=name, tag=tag).first() if name else None
            if found is None:
                raise ValidationError(
                    f"No base image {data!r}; give the id or the name:tag of one in /api/v1/base-images/."
                )
            return found
        return super().to_internal_value(data)  # type: ignore[no-any-return]


# Described for the schema: drf-spectacular cannot tell a custom field's shape (check --deploy warned).
@extend_schema_field({"type": "object", "additionalProperties": {"type": "string", "nullable": True}})
class SecretsField(serializers.Field):
    """Secret variables: written as NAME: "value" (null deletes one on PATCH), read back as
    NAME: "********". The values never leave the portal again (apps/applications/secret_env.py)."""

    default_error_messages = {
        "invalid": 'Secrets are an object of NAME: "value" pairs (null deletes one).',
    }

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault(
            "help_text",
            'Secret variables, NAME: "value"; read back masked as "********". On PATCH only the names '
            "given change (null deletes one).",
        )
        super().__init__(**kwargs)

    def to_representation(self, value: Any) -> dict[str, str]:
        return secret_env.masked(value)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.fail("invalid")
        # Values are checked by the service (a string, or null to delete), with the names.
        return dict(data)


class AppSerializer(serializers.ModelSerializer):
    team = SlugRelatedField(slug_field="slug", queryset=Team.objects.all())
    base_image = BaseImageField(queryset=BaseImage.objects.all(), help_text="An id, or name:tag")
    base_image_reference = serializers.CharField(source="base_image.reference", read_only=True)
    command = serializers.ListField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False), required=False
    )
    env = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False), required=False
    )
    secrets = SecretsField(required=False)
    memory_mb = serializers.IntegerField(required=False, default=64)
    cpus = serializers.DecimalField(
        max_digits=5, decimal_places=2, required=False, default=Decimal("0.25"), coerce_to_string=False
    )
    instances = serializers.IntegerField(required=False, default=0)
    running = serializers.SerializerMethodField()
    ip_pool = SlugRelatedField(
        slug_field="name",
        queryset=IPPool.objects.all(),
        required=False,
        help_text="IP pool for static addresses; omitted: the only pool there is, if any.",
    )
    address = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        help_text="A specific free address of the pool for the first instance (e.g. a migrated VM's IP).",
    )
    release = serializers.IntegerField(
        source="release.number", read_only=True, default=None, help_text="The release the app runs"
    )

    class Meta:
        model = App
        fields = [
            "slug",
            "team",
            "base_image",
            "base_image_reference",
            "command",
            "port",
            "env",
            "secrets",
            "memory_mb",
            "cpus",
            "instances",
            "running",
            "ip_pool",
            "address",
            "volume_mount",
            "workdir",
            "state_paths",
            "health_check",
            "health_path",
            "health_timeout",
            "release",
            "created_at",
            "updated_at",
        ]
        # The mount path, working directory and persistent paths are set by a VM move or changed
        # with PATCH (a new release).
        read_only_fields = ["created_at", "updated_at", "volume_mount", "workdir", "state_paths"]
        # Uniqueness is checked by the service, with its own message.
        extra_kwargs: dict[str, Any] = {"slug": {"validators": []}}

    def get_running(self, app: App) -> int:
        counted = getattr(app, "running_count", None)
        if counted is not None:
            return int(counted)
        return app.instance_set.filter(state=Instance.State.RUNNING).count()


class AppUpdateSerializer(serializers.Serializer):
    base_image = serializers.PrimaryKeyRelatedField(queryset=BaseImage.objects.all(), required=False)
    command = serializers.ListField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False), required=False
    )
    port = serializers.IntegerField(required=False, allow_null=True)
    env = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False), required=False
    )
    secrets = SecretsField(required=False)
    make_secret = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="Names of plain variables (env) to mark secret, with their value",
    )
    volume_mount = serializers.CharField(
        required=False, allow_blank=True, help_text="Where the app's files appear; empty: the default"
    )
    workdir = serializers.CharField(required=False, allow_blank=True, help_text="Empty: the image's own")
    health_check = serializers.ChoiceField(choices=HealthCheck.choices, required=False)
    health_path = serializers.CharField(required=False, help_text="For HTTP checks: the path to GET")
    health_timeout = serializers.IntegerField(
        required=False, min_value=1, max_value=600, help_text="Seconds a new instance has to pass the check"
    )
    state_paths = serializers.ListField(
        child=serializers.CharField(trim_whitespace=False),
        required=False,
        help_text="Paths inside the app's files bound from its persistent directory, e.g. logs",
    )
    note = serializers.CharField(
        required=False, allow_blank=True, max_length=500, help_text="The new release's note"
    )
    batch = serializers.IntegerField(required=False, min_value=1, help_text="Instances recreated at a time")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise ValidationError(
                {
                    field: f"Not editable here; editable: {', '.join(self.fields)}. Memory and CPU change through a resource request; "
                    "the instance count through scale."
                    for field in sorted(unknown)
                }
            )
        return attrs


class AddressSerializer(serializers.ModelSerializer):
    class Meta:
        model = IPAllocation
        fields = ["slot", "address", "requested", "created_at"]
        read_only_fields = ["requested", "created_at"]
        extra_kwargs: dict[str, Any] = {"slot": {"required": False}, "address": {"protocol": "both"}}


class AddressRequestSerializer(serializers.Serializer):
    address = serializers.CharField(max_length=45)
    slot = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=settings.MAX_INSTANCES_PER_APP - 1,
        help_text="Default: the next slot a scale-up makes.",
    )


class MoveSerializer(serializers.Serializer):
    host = SlugRelatedField(slug_field="name", queryset=Host.objects.all(), help_text="Target host")


class UpgradeSerializer(serializers.Serializer):
    base_image = BaseImageField(
        queryset=BaseImage.objects.all(), help_text="The version to roll onto: its id or name:tag"
    )


class ScaleSerializer(serializers.Serializer):
    instances = serializers.IntegerField()


class UploadSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="A tar archive (plain, gzip, bzip2 or xz) of the files to put into the app volume."
    )


class AppViewSet(ServiceErrors, ReleaseActions, viewsets.ModelViewSet):
    serializer_class = AppSerializer
    operation_serializer = OperationSerializer
    lookup_field = "slug"
    lookup_value_regex = r"[a-z][a-z0-9-]{1,39}"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[App]:
        return selectors.app_list(self.request.user)

    # The body may hold secret values: an error report shows no variable of these frames.
    @sensitive_variables()
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if not permissions.is_member(request.user, data["team"].pk):
            raise ValidationError({"team": f"You are not a member of team {data['team'].slug}."})
        app = self.call(services.app_create, user=request.user, **data)
        return Response(self.get_serializer(app).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=AppUpdateSerializer, responses=AppSerializer)
    @sensitive_variables()
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        app = self.get_object()
        body = AppUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        app = self.call(services.app_update, user=request.user, app=app, **body.validated_data)
        return Response(self.get_serializer(app).data)

    @extend_schema(request=None, responses={202: OperationSerializer})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        op = self.call(services.app_delete, user=request.user, app=self.get_object())
        return Response(OperationSerializer(op).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=ScaleSerializer, responses={202: OperationSerializer})
    @action(detail=True, methods=["post"])
    def scale(self, request: Request, slug: str | None = None) -> Response:
        app = self.get_object()
        body = ScaleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        op = self.call(
            services.app_scale, user=request.user, app=app, instances=body.validated_data["instances"]
        )
        return Response(OperationSerializer(op).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=UpgradeSerializer, responses={202: OperationSerializer, 200: AppSerializer})
    @action(detail=True, methods=["post"])
    def upgrade(self, request: Request, slug: str | None = None) -> Response:
        """Roll the app's instances onto another base image version, one at a time behind the
        app's health check; progress per instance is in the operation's params."""
        app = self.get_object()
        body = UpgradeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        op = self.call(
            services.app_upgrade, user=request.user, app=app, base_image=body.validated_data["base_image"]
        )
        if op is None:  # nothing to roll: the app has no instances, or all run the version
            app.refresh_from_db()
            return Response(self.get_serializer(app).data)
        return Response(OperationSerializer(op).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses=InstanceSerializer(many=True))
    @action(detail=True, methods=["get"])
    def instances(self, request: Request, slug: str | None = None) -> Response:
        app = self.get_object()
        qs = app.instance_set.select_related("app__base_image", "host", "image").order_by("slot")
        return Response(InstanceSerializer(qs, many=True).data)

    @extend_schema(responses=OperationSerializer(many=True))
    @action(detail=True, methods=["get"])
    def operations(self, request: Request, slug: str | None = None) -> Response:
        app = self.get_object()
        qs = app.operations.select_related("requested_by")[:100]
        return Response(OperationSerializer(qs, many=True).data)

    @extend_schema(
        request=RequestBodySerializer,
        responses={200: ResourceRequestSerializer(many=True), 201: ResourceRequestSerializer},
    )
    @action(detail=True, methods=["get", "post"], url_path="resource-requests")
    def resource_requests(self, request: Request, slug: str | None = None) -> Response:
        """The app's resize history; POST files a request {"memory_mb", "cpus", "reason"}."""
        app = self.get_object()
        if request.method == "POST":
            return file_request(request, app)
        qs = app.resource_requests.select_related("requested_by", "decided_by").prefetch_related(
            "events__user"
        )
        return Response(ResourceRequestSerializer(qs[:100], many=True).data)

    @extend_schema(parameters=APP_LOG_PARAMETERS, responses=LOG_RESPONSES)
    @action(detail=True, methods=["get"], renderer_classes=LOG_RENDERERS)
    def logs(self, request: Request, slug: str | None = None) -> HttpResponseBase:
        """The last lines of all the app's instances merged by time, each line starting with
        its instance's name (`json=1`: objects with instance, stream, time and text). `tail`
        counts lines in all, at most LOG_TAIL_MAX. `follow=1` keeps the response open with
        every instance's new lines as they are written."""
        return app_logs_response(request, self.get_object())

    @extend_schema(parameters=TIMELINE_PARAMETERS_APP, responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"])
    def events(self, request: Request, slug: str | None = None) -> Response:
        """The app's timeline, newest first: deaths (exit code, OOM, the last lines), crash
        loops, starts, stops and restarts, deploys, scales, resizes, moves, commands and
        terminals."""
        return timeline_response(request, self.get_object())

    @extend_schema(request=NamedCommandSerializer, responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get", "post"])
    def commands(self, request: Request, slug: str | None = None) -> Response:
        """The app's one-click commands; POST {"name", "argv", "description"} defines one
        (a lead of the app's team, or ops)."""
        return app_commands(request, self.get_object())

    @extend_schema(parameters=METRICS_PARAMETERS, responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"])
    def metrics(self, request: Request, slug: str | None = None) -> Response:
        """CPU, memory, network and block I/O of every instance and of the whole app, with
        markers for deploys, restarts and OOM kills."""
        app = self.get_object()
        return Response(app_metrics(app, window_of(request)))

    @extend_schema(
        request=AddressRequestSerializer,
        responses={200: AddressSerializer(many=True), 201: AddressSerializer},
    )
    @action(detail=True, methods=["get", "post"])
    def addresses(self, request: Request, slug: str | None = None) -> Response:
        """The app's static addresses by slot; POST reserves a specific free one for a slot."""
        app = self.get_object()
        if request.method == "GET":
            return Response(AddressSerializer(app.addresses.order_by("slot"), many=True).data)
        body = AddressRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        allocation = self.call(
            address_request,
            user=request.user,
            app=app,
            address=body.validated_data["address"],
            slot=body.validated_data.get("slot"),
        )
        return Response(AddressSerializer(allocation).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request={"multipart/form-data": UploadSerializer},
        responses={202: OperationSerializer, 200: None},
        deprecated=True,
        description="Kept for scripts from before releases: the archive becomes the next release "
        "(POST releases/ does the same and says more). 202 with the deploy; 200 when the app has "
        "no instances to deploy it to.",
    )
    @action(detail=True, methods=["post"], parser_classes=[parsers.MultiPartParser])
    def volume(self, request: Request, slug: str | None = None) -> Response:
        app = self.get_object()
        body = UploadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        upload = body.validated_data["file"]
        _, op = self.call(
            releases.release_create, user=request.user, app=app, fileobj=upload.file, size=upload.size
        )
        if op is None:
            return Response(None, status=status.HTTP_200_OK)
        return Response(OperationSerializer(op).data, status=status.HTTP_202_ACCEPTED)


class InstanceViewSet(
    ServiceErrors, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    serializer_class = InstanceSerializer

    def get_queryset(self) -> QuerySet[Instance]:
        return Instance.objects.filter(app__in=selectors.apps_visible_to(self.request.user)).select_related(
            "app__base_image", "host", "image"
        )

    def _act(self, action_name: str) -> Response:
        op = self.call(
            services.instance_action, user=self.request.user, instance=self.get_object(), action=action_name
        )
        return Response(OperationSerializer(op).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: OperationSerializer})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._act("remove")

    @extend_schema(request=None, responses={202: OperationSerializer})
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: str | None = None) -> Response:
        return self._act("start")

    @extend_schema(request=None, responses={202: OperationSerializer})
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, pk: str | None = None) -> Response:
        return self._act("stop")

    @extend_schema(request=None, responses={202: OperationSerializer})
    @action(detail=True, methods=["post"])
    def restart(self, request: Request, pk: str | None = None) -> Response:
        return self._act("restart")

    @extend_schema(request=ExecBodySerializer, responses=ExecResultSerializer)
    @action(detail=True, methods=["post"])
    def exec(self, request: Request, pk: str | None = None) -> Response:
        """Run {"argv": [...], "timeout": s, "user": optional, "workdir": optional} (or {"name":
        a named command}) in the running instance; no shell unless argv asks for one."""
        return run_exec(request, self.get_object())

    @extend_schema(parameters=LOG_PARAMETERS, responses=LOG_RESPONSES)
    @action(detail=True, methods=["get"], renderer_classes=LOG_RENDERERS)
    def logs(self, request: Request, pk: str | None = None) -> HttpResponseBase:
        """What the instance printed, oldest first, as text (stdout and stderr merged in order;
        `stream` picks one, `json=1` marks each line). Another team's instance is a 404."""
        return logs_response(request, self.get_object())

    @extend_schema(parameters=TIMELINE_PARAMETERS, responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"])
    def events(self, request: Request, pk: str | None = None) -> Response:
        """This instance's timeline (its slot's containers, its own operations and the app's,
        its commands and terminals), newest first."""
        instance = self.get_object()
        return timeline_response(request, instance.app, instance)

    @extend_schema(parameters=METRICS_PARAMETERS, responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"])
    def metrics(self, request: Request, pk: str | None = None) -> Response:
        """This instance's slot: CPU, memory, network and block I/O, with markers."""
        instance = self.get_object()
        return Response(app_metrics(instance.app, window_of(request), slot=instance.slot))

    @extend_schema(request=MoveSerializer, responses={202: OperationSerializer})
    @action(detail=True, methods=["post"])
    def move(self, request: Request, pk: str | None = None) -> Response:
        """Recreate the instance on another host with the same slot, address and volume (ops)."""
        instance = self.get_object()  # another team's instance is a 404 before anything else
        body = MoveSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        op = self.call(
            services.instance_move, user=request.user, instance=instance, host=body.validated_data["host"]
        )
        return Response(OperationSerializer(op).data, status=status.HTTP_202_ACCEPTED)


class OperationViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = OperationSerializer

    def get_queryset(self) -> QuerySet[Operation]:
        user = self.request.user
        qs = Operation.objects.select_related("requested_by")
        if permissions.is_ops(user):
            return qs
        return qs.filter(app__in=selectors.apps_visible_to(user))


class RollSerializer(serializers.Serializer):
    apps = serializers.ListField(
        child=serializers.SlugField(), required=False, help_text="Slugs; empty: every app on another version"
    )


class RollResultSerializer(serializers.Serializer):
    operations = OperationSerializer(many=True)
    refused = serializers.ListField(child=serializers.CharField())


class BaseImageViewSet(ServiceErrors, viewsets.ReadOnlyModelViewSet):
    serializer_class = BaseImageSerializer
    queryset = BaseImage.objects.prefetch_related("hosts")

    @extend_schema(request=None, responses={202: BaseImageSerializer})
    @action(detail=True, methods=["post"])
    def publish(self, request: Request, pk: str | None = None) -> Response:
        """Ops: build the version from its recipe and load it onto every active host; follow
        `state` and `load_progress` by GETting the version."""
        image = self.call(publish.image_publish, user=request.user, image=self.get_object())
        return Response(BaseImageSerializer(image).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={200: BaseImageSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Ops: stop the version's build or load in progress (its `build_error` says who
        cancelled it and at which step)."""
        image = self.call(publish.image_cancel, user=request.user, image=self.get_object())
        return Response(BaseImageSerializer(image).data)

    @extend_schema(request=RollSerializer, responses={202: RollResultSerializer})
    @action(detail=True, methods=["post"])
    def roll(self, request: Request, pk: str | None = None) -> Response:
        """Ops: roll apps onto this version (default: every app on another version of the image),
        each one instance at a time behind its health check."""
        image = self.get_object()
        body = RollSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        slugs = body.validated_data.get("apps")
        apps = None
        if slugs:
            found = {app.slug: app for app in App.objects.filter(slug__in=slugs)}
            missing = sorted(set(slugs) - set(found))
            if missing:
                raise ValidationError({"apps": f"No such app(s): {', '.join(missing)}."})
            apps = [found[slug] for slug in slugs]
        started, refused = self.call(services.apps_upgrade, user=request.user, target=image, apps=apps)
        return Response(
            {"operations": OperationSerializer(started, many=True).data, "refused": refused},
            status=status.HTTP_202_ACCEPTED,
        )
