"""Resize pages: the Resources card of the app page (file, cancel, retry) and the approvals inbox
of leads and ops. Thin: every rule and every refusal comes from apps.resources.services.

Refusals answer 422 (ValidationError) or 403 (PermissionDenied) with the message, as an htmx
fragment or, without htmx, as a page."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.forms import BaseForm
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from apps.accounts import permissions
from apps.applications import quota
from apps.applications.models import App
from apps.applications.selectors import apps_visible_to
from apps.hosts.models import Host
from apps.resources import services
from apps.resources.forms import ResourceRequestForm
from apps.resources.models import ResourceRequest
from portal.http import HtmxHttpRequest

HISTORY = 20  # requests shown on the app page and decided requests in the inbox


def decides_requests(user: Any) -> bool:
    """Ops, and leads of at least one team: who gets the inbox and its badge."""
    if not getattr(user, "is_authenticated", False):
        return False
    return permissions.is_ops(user) or permissions.leads_any_team(user)


def _text(exc: ValidationError) -> str:
    return " ".join(exc.messages)


def _add_errors(form: BaseForm, exc: ValidationError) -> None:
    if hasattr(exc, "error_dict"):
        for name, errors in exc.message_dict.items():
            form.add_error(name if name in form.fields else None, errors)
    else:
        form.add_error(None, exc)


# --- the Resources card of the app page ---------------------------------------------------------


@dataclass
class HostRoom:
    host: Host
    free_memory_mb: int
    free_cpus: Decimal


@dataclass
class ResourcesCard:
    usage: list[services.InstanceUsage]
    quota: quota.Usage
    hosts: list[HostRoom]
    open: ResourceRequest | None
    history: list[ResourceRequest]
    form: ResourceRequestForm
    can_cancel: bool
    can_decide: bool
    error: str = ""
    notice: str = ""


def app_resources_context(
    user: Any, app: App, *, form: ResourceRequestForm | None = None, error: str = "", notice: str = ""
) -> ResourcesCard:
    """What the Resources card shows. Usage comes from the last metrics samples, so rendering the
    page never waits on a host."""
    usage = services.usage_of(app, live=False)
    hosts = {u.instance.host_id: u.instance.host for u in usage}
    room = services.host_room(list(hosts.values()))
    history = list(
        app.resource_requests.select_related("requested_by", "decided_by").prefetch_related("events__user")[
            :HISTORY
        ]
    )
    # At most one is open, and nothing newer can be filed while it is: it is the latest.
    open_request = history[0] if history and history[0].open else None
    can_cancel = can_decide = False
    if open_request is not None and open_request.state == ResourceRequest.State.PENDING:
        can_cancel = open_request.requested_by_id == user.pk or permissions.is_ops(user)
        can_decide = not services.can_decide(user, open_request)
    if form is None:
        form = ResourceRequestForm(
            initial={"memory_mb": app.memory_mb, "cpus": app.cpus}, auto_id="resize_%s"
        )
    return ResourcesCard(
        usage=usage,
        quota=quota.usage(app.team),
        hosts=[
            HostRoom(host, *room.get(pk, (0, Decimal(0))))
            for pk, host in sorted(hosts.items(), key=lambda item: item[1].name)
        ],
        open=open_request,
        history=history,
        form=form,
        can_cancel=can_cancel,
        can_decide=can_decide,
        error=error,
        notice=notice,
    )


@login_required
def card(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """The Resources card, polled while a request is on its way; 286 stops the polling once it
    is settled (applied, rejected, cancelled), with the card showing how."""
    app = get_object_or_404(apps_visible_to(request.user), slug=slug)
    response = _card(request, app)
    open_request = app.resource_requests.order_by("-created_at", "-pk").first()
    if open_request is None or open_request.state not in (
        ResourceRequest.State.PENDING,
        ResourceRequest.State.APPROVED,
    ):
        response.status_code = 286
    return response


def _card(
    request: HtmxHttpRequest,
    app: App,
    *,
    status: int = 200,
    form: ResourceRequestForm | None = None,
    error: str = "",
    notice: str = "",
) -> HttpResponse:
    app = App.objects.select_related("team").get(pk=app.pk)  # limits change on auto-approval
    context = {
        "app": app,
        "resources": app_resources_context(request.user, app, form=form, error=error, notice=notice),
    }
    # Without htmx the card comes as a page of its own (a refusal keeps what was typed).
    template = "resources/_app_resources.html" if request.htmx else "resources/app_resources.html"
    return render(request, template, context, status=status)


def _filed(created: ResourceRequest) -> str:
    if created.state == ResourceRequest.State.APPROVED:
        return (
            f"{created.change_text}: within team {created.app.team.slug}'s quota and auto-approve step, "
            "so it applies now to every instance, without a restart."
        )
    return f"Filed ({created.change_text}); it waits for a lead of team {created.app.team.slug} or ops."


@login_required
@require_POST
def file_request(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    app = get_object_or_404(apps_visible_to(request.user).select_related("team"), slug=slug)
    form = ResourceRequestForm(request.POST, auto_id="resize_%s")
    if not form.is_valid():
        return _card(request, app, form=form, status=422)
    try:
        created = services.request_create(user=request.user, app=app, **form.cleaned_data)
    except ValidationError as exc:
        _add_errors(form, exc)
        return _card(request, app, form=form, status=422)
    except PermissionDenied as exc:
        form.add_error(None, str(exc))
        return _card(request, app, form=form, status=403)
    if not request.htmx:
        messages.success(request, _filed(created))
        return redirect("catalog:detail", slug=app.slug)
    return _card(request, app, notice=_filed(created))


def _act(request: HtmxHttpRequest, pk: int, action: Any, done: str) -> HttpResponse:
    target = get_object_or_404(services.visible_to(request.user), pk=pk)
    try:
        action(user=request.user, request=target)
    except PermissionDenied as exc:
        return _card(request, target.app, error=str(exc), status=403)
    except ValidationError as exc:
        return _card(request, target.app, error=_text(exc), status=422)
    if not request.htmx:
        messages.success(request, done)
        return redirect("catalog:detail", slug=target.app.slug)
    return _card(request, target.app, notice=done)


@login_required
@require_POST
def cancel(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, services.request_cancel, "Request cancelled.")


@login_required
@require_POST
def retry(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    return _act(
        request, pk, services.request_retry, "Applying again, on the instances that did not take the change."
    )


# --- the approvals inbox ------------------------------------------------------------------------


@dataclass
class InboxItem:
    request: ResourceRequest
    usage: list[services.InstanceUsage] = field(default_factory=list)
    quota: quota.Usage | None = None
    refusal: str = ""  # why approving would be refused now ('' if it would pass)
    error: str = ""
    comment: str = ""


def _inbox_item(target: ResourceRequest, *, error: str = "", comment: str = "") -> InboxItem:
    item = InboxItem(target, error=error, comment=comment)
    if target.state != ResourceRequest.State.PENDING:
        return item  # decided: the card shows only the outcome
    app = target.app
    item.usage = services.usage_of(app, live=False)
    item.quota = quota.usage(app.team)
    try:
        # The same check approving runs (hosts and quota as they are now), from stored samples.
        services.check_change(app, target.memory_mb, Decimal(target.cpus), live_usage=False)
    except ValidationError as exc:
        item.refusal = _text(exc)
    return item


def _decided(user: Any) -> Any:
    return (
        services.visible_to(user)
        .exclude(state=ResourceRequest.State.PENDING)
        .order_by("-decided_at", "-id")[:HISTORY]
    )


def _inbox(user: Any, *, error: str = "") -> dict[str, Any]:
    pending = services.pending_for(user).order_by("created_at", "id")
    return {
        "decides": decides_requests(user),
        "pending": [_inbox_item(r) for r in pending],
        "decided": _decided(user),
        "error": error,
    }


@login_required
@require_GET
def approvals(request: HtmxHttpRequest) -> HttpResponse:
    return render(request, "resources/approvals.html", _inbox(request.user))


@login_required
@require_POST
def decide(request: HtmxHttpRequest, pk: int, approve: bool) -> HttpResponse:
    target = get_object_or_404(services.visible_to(request.user), pk=pk)
    comment = request.POST.get("comment", "")
    try:
        services.request_decide(user=request.user, request=target, approve=approve, comment=comment)
    except PermissionDenied as exc:
        error, status = str(exc), 403
    except ValidationError as exc:
        error, status = _text(exc), 422
    else:
        if not request.htmx:
            verdict = "Approved; the change is being applied" if approve else "Rejected"
            messages.success(request, f"{verdict}: {target.app.slug}, {target.change_text}.")
            return redirect("resources:approvals")
        error, status = "", 200
    if not request.htmx:
        return render(request, "resources/approvals.html", _inbox(request.user, error=error), status=status)
    target = services.visible_to(request.user).get(pk=pk)  # as it is now, whoever decided it
    return render(
        request,
        "resources/approvals.html#request-item",
        # decided_now: the nav's badge and "Decided lately" come along (out of band).
        {
            "item": _inbox_item(target, error=error, comment=comment if error else ""),
            "decided_now": True,
            "decided": _decided(request.user),
        },
        status=status,
    )
