"""REST API: run a command in an instance, its logs, the app's named commands, the exec audit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import mixins, renderers, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from apps.applications.models import App
from apps.console import logs, services
from apps.console.models import ExecSession
from apps.events import selectors as events
from apps.instances.models import Instance
from portal.api import Pagination, service_call


class ExecBodySerializer(serializers.Serializer):
    # Types are checked by the service, so the API and the page give the same messages.
    argv = serializers.JSONField(required=False)
    name = serializers.CharField(required=False, allow_blank=True, max_length=40, help_text="A named command")
    timeout = serializers.JSONField(required=False, help_text="Seconds")
    user = serializers.CharField(required=False, allow_blank=True, max_length=64)
    workdir = serializers.CharField(required=False, allow_blank=True, max_length=255)


class ExecSessionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ExecSession
        fields = [
            "id",
            "kind",
            "username",
            "app_slug",
            "instance_name",
            "host_name",
            "argv",
            "name",
            "run_as",
            "workdir",
            "started_at",
            "ended_at",
            "exit_code",
            "timed_out",
            "truncated",
            "bytes_out",
            "error",
        ]
        read_only_fields = fields


class ExecResultSerializer(ExecSessionSerializer):
    output = serializers.SerializerMethodField()
    duration = serializers.FloatField(read_only=True)

    class Meta(ExecSessionSerializer.Meta):
        fields = [*ExecSessionSerializer.Meta.fields, "duration", "output"]
        read_only_fields = fields

    def get_output(self, session: ExecSession) -> str:
        return str(self.context.get("output", ""))


class NamedCommandSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=40)
    argv = serializers.JSONField()
    description = serializers.CharField(required=False, allow_blank=True, max_length=200)


def run_exec(request: Request, instance: Instance) -> Response:
    """POST /instances/{id}/exec/: runs to the end (or its timeout) and answers with the output."""
    body = ExecBodySerializer(data=request.data)
    body.is_valid(raise_exception=True)
    data = body.validated_data
    output = bytearray()
    session = service_call(
        services.exec_run,
        user=request.user,
        instance=instance,
        on_output=output.extend,
        argv=data.get("argv"),
        name=data.get("name", ""),
        timeout=data.get("timeout"),
        run_as=data.get("user", ""),
        workdir=data.get("workdir", ""),
    )
    text = output.decode(errors="replace")
    return Response(ExecResultSerializer(session, context={"output": text}).data, status=status.HTTP_200_OK)


def commands(request: Request, app: App) -> Response:
    """GET/POST /apps/{slug}/commands/: the app's one-click commands (POST: leads and ops)."""
    if request.method == "POST":
        body = NamedCommandSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        service_call(services.named_command_save, user=request.user, app=app, **body.validated_data)
    listed = [{"name": n, "argv": a, "description": d} for n, a, d in services.named_commands(app)]
    return Response(
        listed, status=status.HTTP_201_CREATED if request.method == "POST" else status.HTTP_200_OK
    )


class ExecSessionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The exec audit: developers see their own, leads their teams', ops all."""

    serializer_class = ExecSessionSerializer
    pagination_class = Pagination
    queryset = ExecSession.objects.none()  # for the schema: its generator has no user

    def get_queryset(self) -> QuerySet[ExecSession]:
        return services.audit_visible_to(self.request.user)


class PlainTextRenderer(renderers.BaseRenderer):
    """text/plain: the logs themselves; an error's messages one per line."""

    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        if isinstance(data, dict):
            return "".join(f"{key}: {value}\n" for key, value in data.items()).encode()
        return str(data).encode()


LOG_RENDERERS = [PlainTextRenderer, renderers.JSONRenderer]
LOG_PARAMETERS = [
    OpenApiParameter(
        "tail", str, description='The last N lines (default 200, at most LOG_TAIL_MAX), or "all"'
    ),
    OpenApiParameter("since", str, description="Only lines from then on: seconds since 1970, or ISO 8601"),
    OpenApiParameter("timestamps", bool, description="Docker's RFC 3339 time before each line"),
    OpenApiParameter("stream", str, enum=list(logs.STREAMS), description="stdout, stderr or both (default)"),
    OpenApiParameter("json", bool, description="JSON lines: one object per line with stream, time and text"),
    OpenApiParameter("download", bool, description="As a file to save (Content-Disposition: attachment)"),
    OpenApiParameter(
        "follow",
        bool,
        description="Keep the response open: the last lines, then each new one as it is written "
        "(chunked), until the client closes it or the container goes; tail is at most LOG_TAIL_MAX",
    ),
    OpenApiParameter(
        "previous",
        bool,
        description="The last lines of the previous container (after a death, an OOM kill, a "
        "recreate or a move), as the portal kept them; tail counts from those",
    ),
]
LOG_RESPONSES = {(200, "text/plain"): OpenApiTypes.STR}
# An app's merged logs take the same, but for download and the previous container (one instance's).
APP_LOG_PARAMETERS = [p for p in LOG_PARAMETERS if p.name not in ("download", "previous")]


def logs_response(request: Request, instance: Instance) -> StreamingHttpResponse:
    """GET /instances/{id}/logs/: the lines Docker keeps for the instance's container, oldest
    first, streamed as they are read from the host."""
    params = {key: request.query_params.get(key, "") for key in ("tail", "since", "timestamps", "stream")}
    if logs.is_yes(request.query_params.get("follow", "")):
        query, stream = service_call(logs.parse_query, params=params, allow_all=False)
        handle, batches = service_call(logs.follow, instance=instance, query=query, stream=stream)
        return _followed(request, [], logs.Merged([("", batches)], [handle]), query.timestamps)
    query, stream = service_call(logs.parse_query, params=params)
    if logs.is_yes(request.query_params.get("previous", "")):
        lines: Iterator[logs.LogLine] = iter(
            service_call(events.previous_lines, instance=instance, query=query, stream=stream)
        )
    else:
        lines = service_call(logs.read, instance=instance, query=query, stream=stream)
    as_json = logs.is_yes(request.query_params.get("json", ""))
    body = _json_lines(lines) if as_json else logs.as_text(lines, query.timestamps)
    response = StreamingHttpResponse(
        body, content_type="application/x-ndjson" if as_json else "text/plain; charset=utf-8"
    )
    if logs.is_yes(request.query_params.get("download", "")):
        name = f"{instance.container_name}.{'ndjson' if as_json else 'log'}"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _followed(
    request: Request, first: list[tuple[str, logs.LogLine]], merged: logs.Merged, timestamps: bool
) -> StreamingHttpResponse:
    """`follow=1`: the lines so far, then each new one as it is written, until the client goes
    (or every followed container does). Each line is text (an app's starts with its instance's
    name) or, with `json=1`, an object; the end says why in a last `[slipway: ...]` line."""
    as_json = logs.is_yes(request.query_params.get("json", ""))

    def encode(name: str, line: logs.LogLine) -> str:
        if as_json:
            return json.dumps({**({"instance": name} if name else {}), **line.as_dict()}) + "\n"
        head = f"{name} " if name else ""
        return f"{head}{line.time} {line.text}\n" if timestamps else f"{head}{line.text}\n"

    async def body() -> AsyncIterator[bytes]:
        try:
            if first:
                yield "".join(encode(name, line) for name, line in first).encode()
            while (item := await asyncio.to_thread(merged.next, 1.0)) is not None:
                name, lines, why = item
                if lines is None:
                    yield encode(name, logs.LogLine("stderr", "", f"[slipway: {why}]")).encode()
                elif lines:
                    yield "".join(encode(name, line) for line in lines).encode()
        finally:
            merged.close()  # the client went, or everything ended: the streams from the hosts close

    response = StreamingHttpResponse(
        body(), content_type="application/x-ndjson" if as_json else "text/plain; charset=utf-8"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # a proxy in front passes each line on at once
    return response


def _json_lines(lines: Iterator[logs.LogLine]) -> Iterator[bytes]:
    for line in lines:
        yield (json.dumps(line.as_dict()) + "\n").encode()


def app_logs_response(request: Request, app: App) -> HttpResponse | StreamingHttpResponse:
    """GET /apps/{slug}/logs/: the last lines of all the app's instances merged by time, each
    marked with its instance."""
    params = {key: request.query_params.get(key, "") for key in ("tail", "since", "timestamps", "stream")}
    query, stream = service_call(logs.parse_query, params=params, allow_all=False)
    if logs.is_yes(request.query_params.get("follow", "")):
        opened = logs.app_follow(app, query, stream)
        first = [
            *opened.snapshot,
            *((name, logs.LogLine("stderr", "", f"[slipway: {why}]")) for name, why in opened.refused),
        ]
        return _followed(request, first, logs.Merged(opened.followed, opened.streams), query.timestamps)
    merged = logs.app_read(app, query, stream)
    if logs.is_yes(request.query_params.get("json", "")):
        body = "".join(json.dumps({"instance": name, **line.as_dict()}) + "\n" for name, line in merged)
        return HttpResponse(body, content_type="application/x-ndjson")
    text = "".join(
        f"{name} {line.time} {line.text}\n" if query.timestamps else f"{name} {line.text}\n"
        for name, line in merged
    )
    return HttpResponse(text, content_type="text/plain; charset=utf-8")
