from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from apps.hosts import consolidation, planner, services
from apps.hosts import drain as draining
from apps.hosts.forms import ConfirmKeyForm, HostRegisterForm
from apps.hosts.models import Drain, FleetScenario, Host
from apps.instances.models import Instance
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
        "drain": host.drains.first(),
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


@staff_member_required
@require_POST
def host_drain(request: HttpRequest, pk: int) -> HttpResponse:
    host = get_object_or_404(Host, pk=pk)
    try:
        drain = draining.host_drain(user=request.user, host=host)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"Draining {host.name}: {drain.total} instance(s) to move.")
    if getattr(request, "htmx", False):
        # The confirm dialog sent it through htmx: reload the whole page, with its message.
        return HttpResponseClientRedirect(reverse("hosts:detail", args=[host.pk]))
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
        messages.success(request, f"{host.name} takes instances again.")
    return redirect("hosts:detail", pk=host.pk)


@staff_member_required
def host_drain_progress(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The drain card alone, polled while a drain runs; 286 stops the polling once it is over."""
    host = get_object_or_404(Host, pk=pk)
    drain = host.drains.first()
    response = render(request, "hosts/host_detail.html#drain", {"host": host, "drain": drain})
    if drain is None or drain.state != drain.State.RUNNING:
        response.status_code = 286
    return response


# The consolidation planner. The page plans on every view: a 2,000 instance fleet takes a
# fraction of a second, and a stored plan would be stale by the time anyone applied it.

MOVES_SHOWN = 200

# The picture, in px. Columns narrower than this stop being readable, so a big fleet scrolls
# sideways instead of shrinking; a small one gets wider columns up to a limit.
_AXIS = 44
_TOP = 24  # the row of marks above the bars (emptied, takes nothing)
_CHART = 180
_COLUMN_MIN = 36
_COLUMN_MAX = 150
_BAR_MAX = 24
_PAD = 3
_PAIR_GAP = 4  # between the "now" pair and the "after" pair
_MEMORY = "#2458d3"
_CPU = "#d08a00"


@dataclass
class _Bar:
    x: float
    y: float
    width: float
    height: float
    fill: str
    opacity: float
    over: bool  # more than the host has: drawn capped, with a red top


@dataclass
class _Column:
    row: consolidation.HostRow
    x: float
    width: float
    center: float
    background: str
    mark: str
    bars: list[_Bar]
    used: list[tuple[float, float, float]]  # measured memory: (x1, x2, y) of a tick on the bar
    title: str
    pct: dict[str, int]


@dataclass
class _Picture:
    width: float
    height: float
    base: float  # y of 0 %
    grid: list[tuple[float, str]]  # (y, label)
    columns: list[_Column]
    rotate: bool  # host names at an angle: the columns are too narrow for them
    label_y: float
    label_chars: int
    pair_labels: bool  # "now" and "after" under each pair: only where there is room
    pair_label_y: float


def _percent(value: float) -> int:
    return round(value * 100)


def _picture(host_rows: list[consolidation.HostRow]) -> _Picture:
    count = len(host_rows)
    column = max(_COLUMN_MIN, min(_COLUMN_MAX, 960 // max(count, 1)))
    bar = min(_BAR_MAX, (column - 2 * _PAD - _PAIR_GAP - 2) / 4)
    span = 4 * bar + 2 + _PAIR_GAP
    rotate = column < 90
    labels = 76 if rotate else 40
    base = _TOP + _CHART
    grid = [(base - _CHART * f, f"{_percent(f)} %") for f in (0.0, 0.5, 1.0)]
    columns = []
    for n, row in enumerate(host_rows):
        x = _AXIS + n * column
        left = x + (column - span) / 2
        bars = []
        used = []
        for group, fill, opacity, measured in (
            (0, row.before, 0.45, row.used_before),
            (1, row.after, 1.0, row.used_after),
        ):
            start = left + group * (2 * bar + 1 + _PAIR_GAP)
            for resource, colour in ((0, _MEMORY), (1, _CPU)):
                value = fill[resource]
                height = _CHART * min(value, 1.0)
                bar_x = start + resource * (bar + 1)
                bars.append(
                    _Bar(
                        round(bar_x, 1),
                        round(base - height, 1),
                        round(bar, 1),
                        round(height, 1),
                        colour,
                        opacity,
                        value > 1.0 + planner.EPS,
                    )
                )
            if measured[0] > 0:
                y = round(base - _CHART * min(measured[0], 1.0), 1)
                used.append((round(start - 1, 1), round(start + bar + 1, 1), y))
        marks = ("!" if not row.usable else "") + ("✕" if row.emptied else "")
        background = "#fbe0de" if not row.usable else "#e8ebf2" if row.emptied else "none"
        state = ", takes no instances" if not row.usable else ""
        state += ", emptied by the plan" if row.emptied else ""
        pct = {
            "memory_before": _percent(row.before[0]),
            "cpu_before": _percent(row.before[1]),
            "memory_after": _percent(row.after[0]),
            "cpu_after": _percent(row.after[1]),
            "used_before": _percent(row.used_before[0]),
            "used_after": _percent(row.used_after[0]),
        }
        title = (
            f"{row.name}{state}. Now: {pct['memory_before']} % memory and {pct['cpu_before']} % CPU "
            f"reserved, {pct['used_before']} % memory used, {row.instances_before} instances. After the "
            f"plan: {pct['memory_after']} % memory and {pct['cpu_after']} % CPU reserved, "
            f"{row.instances_after} instances."
        )
        columns.append(_Column(row, x, column, x + column / 2, background, marks, bars, used, title, pct))
    return _Picture(
        width=_AXIS + count * column + 8,
        height=base + labels,
        base=base,
        grid=grid,
        columns=columns,
        rotate=rotate,
        label_y=base + (14 if rotate else 30),
        label_chars=16 if rotate else max(4, column // 7),
        pair_labels=not rotate,
        pair_label_y=base + 14,
    )


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
            "picture": _picture(host_rows),
            "moves": moves,
            "more_moves": len(plan.moves) - len(shown),
            "unplaced": plan.unplaced[:50],
            "unspread": plan.unspread[:50],
            "draining_already": draining_already,
            "to_drain": len(plan.emptied) - len(draining_already),
            "planning_ms": round(plan.seconds * 1000, 1),
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
