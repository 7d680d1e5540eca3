from __future__ import annotations

from decimal import Decimal

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from apps.applications import services as app_services
from apps.applications.models import App
from apps.fleet import consolidation, picture, planner, spread
from apps.fleet import drain as draining
from apps.fleet import prepare as preparing
from apps.fleet.forms import ConfirmKeyForm, HostRegisterForm
from apps.fleet.models import Drain, FleetScenario
from apps.hosts import gateway, services
from apps.hosts.models import Host
from apps.instances.models import Instance
from apps.network import services as network_services
from portal.http import HtmxHttpRequest

# Host pages are for ops (staff). staff_member_required sends others to the admin login.


@staff_member_required
def host_list(request: HttpRequest) -> HttpResponse:
    form = HostRegisterForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            host = services.host_register(**form.cleaned_data, user=request.user)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return redirect("hosts:detail", pk=host.pk)
    hosts = Host.objects.all()
    return render(
        request,
        "hosts/host_list.html",
        {"hosts": hosts, "form": form, "portal_key": gateway.portal_public_key(), **_spread_context()},
    )


def _spread_context() -> dict[str, object]:
    return {"stacked": spread.stacked(), "moving": spread.moving()}


@staff_member_required
def spread_card(request: HttpRequest) -> HttpResponse:
    """The spread card, polled while its moves run."""
    return render(request, "hosts/_spread.html", _spread_context())


@staff_member_required
@require_POST
def spread_app(request: HttpRequest, app_id: int) -> HttpResponse:
    app = get_object_or_404(App, pk=app_id)
    try:
        spread.respread(user=request.user, app=app)
    except ValidationError as exc:
        context = _spread_context() | {"spread_error": " ".join(exc.messages)}
        return render(request, "hosts/_spread.html", context, status=422)
    return render(request, "hosts/_spread.html", _spread_context())


@staff_member_required
def host_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    host = get_object_or_404(Host, pk=pk)
    template = "hosts/host_detail.html#host-state" if request.htmx else "hosts/host_detail.html"
    return render(request, template, _detail(host, ConfirmKeyForm()))


def _drain_context(host: Host) -> dict[str, object]:
    """What the drain card, the state badge and the instance list show: the latest drain, and
    the instances on the host (what is left to drain)."""
    instances = list(
        Instance.objects.filter(host=host)
        .exclude(desired_state=Instance.Desired.REMOVED)
        .select_related("app__team")
        .order_by("app__slug", "slot")
    )
    return {
        "host": host,
        "drain": host.drains.first(),
        "left": len(instances),
        "instances": instances,
        "app_count": len({i.app_id for i in instances}),
        "reserved_memory": sum(i.memory_mb for i in instances),
        "reserved_cpus": sum((i.cpus for i in instances), Decimal(0)),
    }


def _drain_card(request: HttpRequest, host: Host, status: int = 200, error: str = "") -> HttpResponse:
    """The drain card, and the state card beside it out of band: both change with a drain."""
    context = _drain_context(host) | {"drain_error": error}
    html = render_to_string("hosts/host_detail.html#drain", context, request=request)
    html += render_to_string("hosts/host_detail.html#host-state", context | {"oob": True}, request=request)
    html += render_to_string(
        "hosts/host_detail.html#host-instances", context | {"oob": True}, request=request
    )
    return HttpResponse(html, status=status)


def _prepare_card(request: HttpRequest, host: Host, status: int = 200, error: str = "") -> HttpResponse:
    """The Prepare card, and the state card (its checks) beside it out of band."""
    host.refresh_from_db()
    context = {
        "host": host,
        "preparation": host.preparations.first(),
        "prepare_error": error,
        "events": host.events.select_related("user")[:20],
        "oob": True,
    }
    html = render_to_string("hosts/host_detail.html#prepare", context, request=request)
    html += render_to_string("hosts/host_detail.html#host-state", context, request=request)
    html += render_to_string("hosts/host_detail.html#host-log", context, request=request)
    return HttpResponse(html, status=status)


@staff_member_required
@require_POST
def host_prepare(request: HttpRequest, pk: int) -> HttpResponse:
    host = get_object_or_404(Host, pk=pk)
    htmx = getattr(request, "htmx", False)
    # Set by "Apply dockerd settings", after the browser's confirmation.
    restart_dockerd = request.POST.get("restart_dockerd") == "1"
    try:
        preparing.host_prepare(user=request.user, host=host, restart_dockerd=restart_dockerd)
    except ValidationError as exc:
        if htmx:
            return _prepare_card(request, host, status=422, error=" ".join(exc.messages))
        messages.error(request, " ".join(exc.messages))
    else:
        if htmx:
            return _prepare_card(request, host)
        messages.success(request, f"Preparing {host.name}.")
    return redirect("hosts:detail", pk=host.pk)


@staff_member_required
def host_prepare_progress(request: HttpRequest, pk: int) -> HttpResponse:
    """The Prepare card, polled while it runs; 286 stops the polling once it is over."""
    host = get_object_or_404(Host, pk=pk)
    preparation = host.preparations.first()
    running = preparation is not None and preparation.state == preparation.State.RUNNING
    return _prepare_card(request, host, status=200 if running else 286)


def _detail(host: Host, form: ConfirmKeyForm) -> dict[str, object]:
    return {
        **_drain_context(host),
        "preparation": host.preparations.first(),
        "confirm_form": form,
        "events": host.events.select_related("user")[:20],
        "findings": host.findings.filter(resolved_at=None).order_by("kind", "subject")[:100],
        "portal_key": gateway.portal_public_key(),
        **_volumes_context(host),
    }


def _volumes_context(host: Host) -> dict[str, object]:
    return {"retained": host.retained_volumes.filter(purged_at=None).select_related("team")}


@staff_member_required
@require_POST
def host_purge_volume(request: HttpRequest, pk: int, volume_id: int) -> HttpResponse:
    """Delete one retained volume's files on the host; the list shows what became of it."""
    host = get_object_or_404(Host, pk=pk)
    volume = app_services.volume_purge(
        volume=get_object_or_404(host.retained_volumes, pk=volume_id), user=request.user
    )
    context = {"host": host, **_volumes_context(host)}
    if volume.purged_at:
        context["purged"] = f"Purged {volume.path}."
    else:
        context["purge_error"] = f"{volume.path}: {volume.purge_error}"
    status = 200 if volume.purged_at else 422
    return render(request, "hosts/host_detail.html#host-volumes", context, status=status)


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
        services.host_refetch_key(host=host, user=request.user)
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
def host_fix_networks(request: HttpRequest, pk: int) -> HttpResponse:
    """The doctor's `network` fix: make the Docker network of each pool the host serves."""
    host = get_object_or_404(Host, pk=pk)
    try:
        done = network_services.host_networks_fix(host=host, user=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        if done:
            messages.success(request, "; ".join(done).capitalize() + ".")
        else:
            messages.info(request, f"No IP pool uses {host.name}: there is no network to make.")
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


@staff_member_required
@require_POST
def host_drain(request: HttpRequest, pk: int) -> HttpResponse:
    host = get_object_or_404(Host, pk=pk)
    htmx = getattr(request, "htmx", False)
    try:
        drain = draining.host_drain(user=request.user, host=host)
    except ValidationError as exc:
        if htmx:
            return _drain_card(request, host, status=422, error=" ".join(exc.messages))
        messages.error(request, " ".join(exc.messages))
    else:
        if htmx:
            # The card shows the drain live and says when it is over: no notice to go stale.
            host.refresh_from_db()
            return _drain_card(request, host)
        messages.success(request, f"Draining {host.name}: {drain.total} instance(s) to move.")
    return redirect("hosts:detail", pk=host.pk)


@staff_member_required
@require_POST
def host_activate(request: HttpRequest, pk: int) -> HttpResponse:
    host = get_object_or_404(Host, pk=pk)
    try:
        draining.host_activate(user=request.user, host=host)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        stacked = spread.stacked()
        messages.success(
            request,
            f"{host.name} takes instances again."
            + (
                f" {len(stacked)} app(s) have every instance on one host: spread them from the Hosts page."
                if stacked
                else ""
            ),
        )
    return redirect("hosts:detail", pk=host.pk)


@staff_member_required
def host_drain_progress(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The drain card alone, polled while a drain runs; 286 stops the polling once it is over."""
    host = get_object_or_404(Host, pk=pk)
    drain = host.drains.first()
    if drain is None or drain.state != drain.State.RUNNING:
        # Over: the last look at the card, with the state badge beside it brought up to date.
        return _drain_card(request, host, status=286)
    # The instances leave the host's list as they move.
    return _drain_card(request, host)


# The consolidation planner. The page plans on every view: a 2,000 instance fleet takes a
# fraction of a second, and a stored plan would be stale by the time anyone applied it.

MOVES_SHOWN = 200


def _move_names(fleet: consolidation.Fleet, moves: list[planner.Move]) -> dict[int, str]:
    """What to call each moved instance: its container on the live fleet (one query)."""
    if not fleet.live:
        return {m.item_id: f"instance #{m.item_id} of app #{m.app_id}" for m in moves}
    found = {
        pk: Instance.name_for(slug, slot)
        for pk, slug, slot in Instance.objects.filter(pk__in={m.item_id for m in moves}).values_list(
            "pk", "app__slug", "slot"
        )
    }
    return {m.item_id: found.get(m.item_id, f"instance #{m.item_id} (gone)") for m in moves}


@staff_member_required
def planner_page(request: HttpRequest) -> HttpResponse:
    scenario: FleetScenario | None = None
    wanted = request.GET.get("scenario", "")
    if wanted:
        if not wanted.isdigit():
            raise Http404("No such fleet scenario.")
        scenario = get_object_or_404(FleetScenario, pk=int(wanted))
        fleet = consolidation.scenario_fleet(scenario)
    else:
        fleet = consolidation.live_fleet()
    plan = planner.plan(fleet.hosts, fleet.items)
    host_rows = consolidation.rows(fleet, plan)
    shown = plan.moves[:MOVES_SHOWN]
    names = _move_names(fleet, shown)

    def host_name(host_id: int | None) -> str:
        return "no host" if host_id is None else fleet.names.get(host_id, f"host #{host_id}")

    moves = [(names[m.item_id], host_name(m.source), host_name(m.target)) for m in shown]
    draining_already = (
        list(
            Drain.objects.filter(host_id__in=plan.emptied, state=Drain.State.RUNNING)
            .order_by("host__name")
            .values_list("host_id", "host__name")
        )
        if fleet.live and plan.emptied
        else []
    )
    return render(
        request,
        "hosts/planner.html",
        {
            "fleet": fleet,
            "scenario": scenario,
            # Only names for the picker: a scenario's fleet is a few hundred KB of JSON.
            "scenarios": FleetScenario.objects.defer("hosts", "items"),
            "plan": plan,
            "instances": len(fleet.items),
            "picture": picture.draw(host_rows),
            "moves": moves,
            "more_moves": len(plan.moves) - len(shown),
            "unplaced": plan.unplaced[:50],
            "unspread": plan.unspread[:50],
            "draining_already": draining_already,
            "to_drain": len(plan.emptied) - len(draining_already),
            "planning_ms": round(plan.seconds * 1000, 1),
            # The plan keeps one host when all fits there; apps stacked now are ops' to spread.
            "stacked": spread.stacked() if fleet.live else [],
        },
    )


@staff_member_required
@require_POST
def planner_apply(request: HttpRequest) -> HttpResponse:
    """Plan the live fleet again (what the page showed may be stale) and drain what it empties."""
    fleet = consolidation.live_fleet()
    plan = planner.plan(fleet.hosts, fleet.items)
    if not plan.emptied:
        messages.info(request, "The plan empties no host now: nothing to drain.")
        return redirect("hosts:planner")
    try:
        drains = consolidation.apply(user=request.user, fleet=fleet, plan=plan)  # one transaction
    except (ValidationError, PermissionDenied) as exc:
        text = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        messages.error(request, text)
        return redirect("hosts:planner")
    if not drains:
        messages.info(request, "Every host the plan empties is being drained already.")
        return redirect("hosts:planner")
    links = format_html_join(
        ", ",
        '<a href="{}">{}</a>',
        ((reverse("hosts:detail", args=[d.host_id]), d.host.name) for d in drains),
    )
    messages.success(
        request,
        format_html(
            "Draining {} host(s): {}. {} instance(s) to move, one at a time; each host's page shows its drain.",
            len(drains),
            links,
            sum(d.total for d in drains),
        ),
    )
    return redirect("hosts:planner")
