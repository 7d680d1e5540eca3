"""The instance page: run a command and watch its output come, the app's one-click commands,
the exec audit. The output is streamed as the command prints it (an async response under the
ASGI server); the last record, after an ASCII record separator, is the result as JSON."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from apps.applications import selectors
from apps.applications.models import App
from apps.console import logs, services
from apps.console.models import ExecSession
from apps.events import selectors as timeline
from apps.instances.models import Instance

RECORD_SEPARATOR = "\x1e"

log = logging.getLogger(__name__)


def _app(user: Any, slug: str) -> App:
    return get_object_or_404(selectors.apps_visible_to(user).select_related("team", "base_image"), slug=slug)


def _instance(user: Any, slug: str, slot: int) -> Instance:
    app = _app(user, slug)
    return get_object_or_404(
        Instance.objects.select_related("app__base_image", "app__team", "host"), app=app, slot=slot
    )


def _back(request: HttpRequest, app: App) -> str:
    """Where a form goes back to: its `next` if it is a page of this site, else the app page."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return reverse("catalog:detail", args=[app.slug])


@login_required
def instance_page(request: HttpRequest, slug: str, slot: int) -> HttpResponse:
    instance = _instance(request.user, slug, slot)
    app = instance.app
    # htmx asks for the recent commands alone, after a command here ended.
    template = (
        "console/instance.html#recent-commands"
        if getattr(request, "htmx", False)
        else "console/instance.html"
    )
    return render(
        request,
        template,
        {
            "app": app,
            "instance": instance,
            "commands": services.named_commands(app),
            "can_define": services.can_define_commands(request.user, app),
            "recent": services.audit_visible_to(request.user).filter(instance=instance)[:20],
            "tail_choices": _tail_choices(),
            "log_bound": f"{settings.CONTAINER_LOG_MAX_SIZE}, {settings.CONTAINER_LOG_MAX_FILE} files kept",
            "tail_default": settings.LOG_TAIL_DEFAULT,
            "default_timeout": settings.EXEC_DEFAULT_TIMEOUT,
            "max_timeout": settings.EXEC_MAX_TIMEOUT,
            "max_output": settings.EXEC_MAX_OUTPUT,
            "timeline_categories": list(timeline.CATEGORIES.items()),
            "has_previous": timeline.previous(instance) is not None,
        },
    )


def _tail_choices() -> list[int]:
    return sorted(
        {
            n
            for n in (50, settings.LOG_TAIL_DEFAULT, 1000, 5000, settings.LOG_TAIL_MAX)
            if n <= settings.LOG_TAIL_MAX
        }
    )


@login_required
def instance_logs(request: HttpRequest, slug: str, slot: int) -> HttpResponse:
    """The logs panel: the last lines, one stream or both, with or without times, filtered by a
    text (case does not matter). A bad choice or an unreadable host says so in the panel."""
    instance = _instance(request.user, slug, slot)
    context: dict[str, Any] = {"app": instance.app, "instance": instance}
    status = 200
    params = {key: request.GET.get(key, "") for key in ("tail", "stream", "timestamps")}
    needle = request.GET.get("q", "").strip()
    try:
        query, stream = logs.parse_query(params, allow_all=False)
        if logs.is_yes(request.GET.get("previous", "")):
            read = timeline.previous_lines(instance, query, stream)
            context["previous"] = timeline.previous(instance)
        else:
            read = list(logs.read(instance, query, stream))
    except ValidationError as exc:
        messages_ = exc.message_dict if hasattr(exc, "error_dict") else {"": exc.messages}
        context["logs_error"] = " ".join(
            f"{key}: {' '.join(texts)}" if key else " ".join(texts) for key, texts in messages_.items()
        )
        status = 422
    else:
        folded = needle.casefold()
        shown = [line for line in read if folded in line.text.casefold()] if needle else read
        context.update(lines=shown, total=len(read), needle=needle, timestamps=query.timestamps)
    return render(request, "console/instance.html#logs-lines", context, status=status)


@login_required
def app_logs(request: HttpRequest, slug: str) -> HttpResponse:
    """The app page's logs panel: the last lines of all its instances merged by Docker's time,
    each marked with its instance; one stream or both, times, a filter."""
    app = _app(request.user, slug)
    context: dict[str, Any] = {"app": app}
    status = 200
    params = {key: request.GET.get(key, "") for key in ("tail", "stream", "timestamps")}
    needle = request.GET.get("q", "").strip()
    try:
        query, stream = logs.parse_query(params, allow_all=False)
    except ValidationError as exc:
        context["logs_error"] = " ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        status = 422
    else:
        merged = logs.app_read(app, query, stream)
        folded = needle.casefold()
        shown = [(n, line) for n, line in merged if folded in line.text.casefold()] if needle else merged
        context.update(lines=shown, total=len(merged), needle=needle, timestamps=query.timestamps)
    return render(request, "console/_app_logs.html#app-logs-lines", context, status=status)


def app_logs_context() -> dict[str, Any]:
    """What the app page's logs panel needs to draw its form."""
    return {
        "tail_choices": _tail_choices(),
        "tail_default": settings.LOG_TAIL_DEFAULT,
        "log_bound": f"{settings.CONTAINER_LOG_MAX_SIZE}, {settings.CONTAINER_LOG_MAX_FILE} files kept",
    }


def _problem(exc: ValidationError) -> JsonResponse:
    detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
    return JsonResponse({"errors": detail}, status=422)


@login_required
@require_POST
async def instance_exec(request: HttpRequest, slug: str, slot: int) -> HttpResponseBase:
    """Check, then stream the command's output while it runs; errors before it starts are a
    422 with the messages as JSON."""
    user = await request.auser()
    instance = await sync_to_async(_instance)(user, slug, slot)
    name = request.POST.get("name", "").strip()
    try:
        session, seconds = await sync_to_async(services.exec_prepare)(
            user=user,
            instance=instance,
            argv=None if name else services.argv_from_text(request.POST.get("argv", "")),
            name=name,
            timeout=request.POST.get("timeout") or None,
            run_as=request.POST.get("user", ""),
            workdir=request.POST.get("workdir", ""),
        )
    except PermissionDenied as exc:
        return JsonResponse({"errors": {"detail": [str(exc)]}}, status=403)
    except ValidationError as exc:
        return _problem(exc)

    async def stream() -> AsyncIterator[bytes]:
        # The queue and the thread are made here, on the loop that consumes the response (under
        # WSGI that is another loop than the view's).
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes | ExecSession | Exception] = asyncio.Queue()

        def work() -> None:
            # The command runs in a thread of its own (docker-py is synchronous); its output
            # crosses to the event loop through the queue as it comes.
            def forward(chunk: bytes) -> None:
                loop.call_soon_threadsafe(chunks.put_nowait, chunk)

            try:
                done = services.exec_execute(session, seconds, forward)
                loop.call_soon_threadsafe(chunks.put_nowait, done)
            except Exception as exc:
                if not isinstance(exc, ValidationError):
                    log.exception("exec %s in %s failed", session.pk, session.instance)
                loop.call_soon_threadsafe(chunks.put_nowait, exc)
            finally:
                close_old_connections()

        threading.Thread(target=work, name=f"exec-{session.pk}", daemon=True).start()
        while True:
            item = await chunks.get()
            if isinstance(item, bytes):
                yield item
                continue
            if isinstance(item, ExecSession):
                result = {
                    "id": item.pk,
                    "exit_code": item.exit_code,
                    "timed_out": item.timed_out,
                    "truncated": item.truncated,
                    "bytes_out": item.bytes_out,
                    "duration": item.duration,
                    "error": item.error,
                }
            else:
                messages_ = item.messages if isinstance(item, ValidationError) else [str(item)]
                result = {"id": session.pk, "exit_code": None, "error": "; ".join(messages_)}
            yield (RECORD_SEPARATOR + json.dumps(result)).encode()
            return

    response = StreamingHttpResponse(stream(), content_type="text/plain; charset=utf-8")
    response["X-Accel-Buffering"] = "no"  # a proxy in front must not hold the output back
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def command_save(request: HttpRequest, slug: str) -> HttpResponse:
    app = _app(request.user, slug)
    try:
        services.named_command_save(
            user=request.user,
            app=app,
            name=request.POST.get("name", ""),
            argv=services.argv_from_text(request.POST.get("argv", "")),
            description=request.POST.get("description", ""),
        )
    except PermissionDenied as exc:
        return HttpResponse(str(exc), status=403)
    except ValidationError as exc:
        for field, errors in (exc.message_dict if hasattr(exc, "error_dict") else {"": exc.messages}).items():
            for error in errors:
                messages.error(request, f"{field}: {error}" if field and field != "__all__" else error)
    else:
        messages.success(request, "Command saved.")
    return redirect(_back(request, app))


@login_required
@require_POST
def command_delete(request: HttpRequest, slug: str, name: str) -> HttpResponse:
    app = _app(request.user, slug)
    try:
        services.named_command_delete(user=request.user, app=app, name=name)
    except PermissionDenied as exc:
        return HttpResponse(str(exc), status=403)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"Command {name} removed.")
    return redirect(_back(request, app))


@login_required
def exec_audit(request: HttpRequest, slug: str) -> HttpResponse:
    app = _app(request.user, slug)
    sessions = services.audit_visible_to(request.user).filter(app=app)[:200]
    return render(request, "console/audit.html", {"app": app, "sessions": sessions})


@login_required
def terminal_page(request: HttpRequest, slug: str, slot: int) -> HttpResponse:
    """A shell in the instance, in the browser (xterm.js over the websocket of consumers.py)."""
    from apps.console.routing import terminal_path  # here: the URLconf need not import Channels
    from apps.console.terminal import duration_text

    instance = _instance(request.user, slug, slot)
    return render(
        request,
        "console/terminal.html",
        {
            "app": instance.app,
            "instance": instance,
            "socket_path": terminal_path(instance.pk),
            "idle_timeout": duration_text(settings.TERMINAL_IDLE_TIMEOUT),
            "max_session": duration_text(settings.TERMINAL_MAX_SESSION),
        },
    )
