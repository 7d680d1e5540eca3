"""The releases API: list an app's releases, make one from an archive (deployed at once), roll
back to a kept one. A deploy while another of the app runs is a 409 naming that operation, so a
client can wait for it and try again."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import parsers, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response

from apps.applications import releases, selectors
from apps.applications.models import App, Release


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "deploy_running"
    default_detail = "Another deploy of the app runs."


def conflict(exc: releases.DeployRunning) -> Conflict:
    error = Conflict()
    # Not through the constructor: DRF would make the operation's id a string.
    error.detail = {"detail": " ".join(exc.messages), "operation": exc.operation.pk}  # type: ignore[assignment,dict-item]
    return error


class ArchiveSerializer(serializers.Serializer):
    sha256 = serializers.CharField()
    size = serializers.IntegerField()
    files = serializers.IntegerField()


class ReleaseSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)
    base_image = serializers.CharField(source="base_image.reference", read_only=True)
    archive = serializers.SerializerMethodField(
        help_text="The uploaded archive whose files it runs; null: none"
    )
    code_from = serializers.IntegerField(
        source="code_number", read_only=True, help_text="The release whose files it uses"
    )
    current = serializers.SerializerMethodField(help_text="The release the app runs (or is being deployed)")
    instances = serializers.SerializerMethodField(help_text="Instances running it now")
    kept = serializers.BooleanField(read_only=True, help_text="False: pruned, its files are gone")
    env_names = serializers.SerializerMethodField(help_text="The environment's names (values are not listed)")
    secret_names = serializers.SerializerMethodField(help_text="Its secret variables' names")

    class Meta:
        model = Release
        fields = [
            "number",
            "created_at",
            "created_by",
            "note",
            "changes",
            "base_image",
            "command",
            "port",
            "env_names",
            "secret_names",
            "workdir",
            "state_paths",
            "health_check",
            "health_path",
            "health_timeout",
            "source",
            "archive",
            "code_from",
            "restored_from",
            "current",
            "instances",
            "kept",
            "pruned_at",
        ]
        read_only_fields = fields

    @extend_schema_field(ArchiveSerializer(allow_null=True))
    def get_archive(self, release: Release) -> dict[str, Any] | None:
        if release.files is None or not release.sha256:
            return None
        return {"sha256": release.sha256, "size": release.size, "files": release.files}

    def get_current(self, release: Release) -> bool:
        return release.pk == release.app.release_id

    def get_instances(self, release: Release) -> int:
        return int(getattr(release, "serving", 0))

    def get_env_names(self, release: Release) -> list[str]:
        return sorted(release.env or {})

    def get_secret_names(self, release: Release) -> list[str]:
        return sorted(release.secrets or {})


class ReleaseCreateSerializer(serializers.Serializer):
    file = serializers.FileField(
        required=False,
        help_text="A tar archive (plain, gzip, bzip2 or xz) of the app's files; without one, the "
        "release keeps the files and configuration of the running one (deploy again).",
    )
    note = serializers.CharField(required=False, allow_blank=True, max_length=500)
    batch = serializers.IntegerField(required=False, min_value=1, help_text="Instances at a time (default 1)")


class RollbackSerializer(serializers.Serializer):
    release = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="The release number; default: the kept release before the current one",
    )
    note = serializers.CharField(required=False, allow_blank=True, max_length=500)
    batch = serializers.IntegerField(required=False, min_value=1)


DEPLOY_RESULT = inline_serializer(
    "ReleaseDeploy",
    {
        "release": ReleaseSerializer(),
        "operation": serializers.DictField(
            allow_null=True, help_text="The deploy; null when the app has no instances"
        ),
    },
)


class ReleaseActions:
    """Mixed into the apps viewset (it provides get_object, call and the operation serializer)."""

    operation_serializer: Any

    def _deployed(self, release: Release, op: Any) -> Response:
        release = selectors.release_list(release.app).get(pk=release.pk)
        body = {
            "release": ReleaseSerializer(release).data,
            "operation": self.operation_serializer(op).data if op is not None else None,
        }
        return Response(body, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        methods=["GET"], responses=ReleaseSerializer(many=True), summary="The app's releases, newest first"
    )
    @extend_schema(
        methods=["POST"],
        request={"multipart/form-data": ReleaseCreateSerializer},
        responses={202: DEPLOY_RESULT},
        summary="Make the next release from an archive and deploy it rolling",
    )
    @action(
        detail=True,
        methods=["get", "post"],
        parser_classes=[parsers.MultiPartParser, parsers.FormParser, parsers.JSONParser],
    )
    def releases(self, request: Request, slug: str | None = None) -> Response:
        app: App = self.get_object()  # type: ignore[attr-defined]
        if request.method == "GET":
            page = self.paginate_queryset(selectors.release_list(app))  # type: ignore[attr-defined]
            return self.get_paginated_response(ReleaseSerializer(page, many=True).data)  # type: ignore[attr-defined,no-any-return]
        body = ReleaseCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        upload = body.validated_data.get("file")
        release, op = self.call(  # type: ignore[attr-defined]
            releases.release_create,
            user=request.user,
            app=app,
            fileobj=upload.file if upload is not None else None,
            size=upload.size if upload is not None else 0,
            note=body.validated_data.get("note", ""),
            batch=body.validated_data.get("batch"),
        )
        return self._deployed(release, op)

    @extend_schema(request=RollbackSerializer, responses={202: DEPLOY_RESULT})
    @action(detail=True, methods=["post"])
    def rollback(self, request: Request, slug: str | None = None) -> Response:
        """Deploy a kept release again as a new release that says which it restored (its files
        are on the hosts already); by default the kept release before the current one."""
        app: App = self.get_object()  # type: ignore[attr-defined]
        body = RollbackSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        release, op = self.call(  # type: ignore[attr-defined]
            releases.release_rollback,
            user=request.user,
            app=app,
            number=body.validated_data.get("release"),
            note=body.validated_data.get("note", ""),
            batch=body.validated_data.get("batch"),
        )
        return self._deployed(release, op)
