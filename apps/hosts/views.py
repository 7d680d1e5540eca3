from __future__ import annotations

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from apps.hosts import services
from apps.hosts.forms import ConfirmKeyForm, HostRegisterForm
from apps.hosts.models import Host
from portal.http import HtmxHttpRequest

# Host pages are for ops (staff). staff_member_required sends others to the admin login.


@staff_member_required
def host_list(request: HttpRequest) -> HttpResponse:
    form = HostRegisterForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            host = services.host_register(**form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return redirect("hosts:detail", pk=host.pk)
    hosts = Host.objects.all()
    return render(request, "hosts/host_list.html", {"hosts": hosts, "form": form})


@staff_member_required
def host_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    host = get_object_or_404(Host, pk=pk)
    template = "hosts/host_detail.html#host-state" if request.htmx else "hosts/host_detail.html"
    return render(request, template, _detail(host, ConfirmKeyForm()))


def _detail(host: Host, form: ConfirmKeyForm) -> dict[str, object]:
    return {
        "host": host,
        "confirm_form": form,
        "events": host.events.select_related("user")[:20],
        "findings": host.findings.filter(resolved_at=None).order_by("kind", "subject")[:100],
    }


@staff_member_required
@require_POST
def host_confirm_key(request: HttpRequest, pk: int) -> HttpResponse:
    host = get_object_or_404(Host, pk=pk)
    form = ConfirmKeyForm(request.POST)
    if form.is_valid():
        try:
            host = services.host_confirm_key(
                host=host, confirmed_fingerprint=form.cleaned_data["fingerprint"], user=request.user
            )
        except ValidationError as exc:
            form.add_error("fingerprint", exc)
        else:
            return redirect("hosts:detail", pk=host.pk)
    return render(request, "hosts/host_detail.html", _detail(host, form), status=400)


@staff_member_required
@require_POST
def host_refetch_key(request: HttpRequest, pk: int) -> HttpResponse:
    host = get_object_or_404(Host, pk=pk)
    try:
        services.host_refetch_key(host=host)
    except ValidationError as exc:
        host.last_error = "; ".join(exc.messages)
    return render(request, "hosts/host_detail.html", _detail(host, ConfirmKeyForm()))


@staff_member_required
@require_POST
def host_probe(request: HttpRequest, pk: int) -> HttpResponse:
    host = services.host_probe(host=get_object_or_404(Host, pk=pk))
    return render(request, "hosts/host_detail.html#host-state", {"host": host})


@staff_member_required
@require_POST
def host_fix_network(request: HttpRequest, pk: int) -> HttpResponse:
    host = get_object_or_404(Host, pk=pk)
    try:
        host = services.host_fix_network(host=host, user=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request, f"fix-network ran on {host.name}; checks {'pass' if host.checks_ok else 'still fail'}."
        )
    return redirect("hosts:detail", pk=pk)


@staff_member_required
@require_POST
def host_override(request: HttpRequest, pk: int) -> HttpResponse:
    host = get_object_or_404(Host, pk=pk)
    try:
        services.host_override_checks(host=host, user=request.user, reason=request.POST.get("reason", ""))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("hosts:detail", pk=pk)
