"""The "Move a VM" wizard: register a VM, trust its host key, inspect it, plan the move, run it
and watch it. Thin: every rule and every refusal comes from apps.relocations.services; their
messages are shown as they are.

A user sees the relocations of their teams (ops all); anything else is a 404. Actions answer
with a redirect to the wizard (a message says what happened); a refused form comes back with
its errors next to its fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.forms import BaseForm
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling

from apps.applications.models import BaseImage
from apps.hosts import gateway
from apps.hosts.transport import fingerprint
from apps.instances.models import Instance
from apps.relocations import plan as planning
from apps.relocations import services
from apps.relocations.forms import ConfirmKeyForm, InstallKeyForm, PlanForm, RegisterForm
from apps.relocations.models import Inspection, Relocation, Step
from portal.http import HtmxHttpRequest

# While in these the wizard polls; its fragment stops the polling once the state leaves them.
BUSY = (Relocation.State.INSPECTING, Relocation.State.RUNNING)
PLANNABLE = (Relocation.State.INSPECTED, Relocation.State.PLANNED, Relocation.State.ROLLED_BACK)
# Where ssh-keygen finds the host key of each type on the VM, to compare fingerprints.
KEY_FILES = {
    "ssh-ed25519": "/etc/ssh/ssh_host_ed25519_key.pub",
    "ssh-rsa": "/etc/ssh/ssh_host_rsa_key.pub",
    "ecdsa-sha2-nistp256": "/etc/ssh/ssh_host_ecdsa_key.pub",
    "ecdsa-sha2-nistp384": "/etc/ssh/ssh_host_ecdsa_key.pub",
    "ecdsa-sha2-nistp521": "/etc/ssh/ssh_host_ecdsa_key.pub",
}


def _relocation_or_404(request: HtmxHttpRequest, pk: int) -> Relocation:
    return get_object_or_404(services.visible_to(request.user), pk=pk)


def _text(exc: ValidationError | PermissionDenied) -> str:
    return " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)


def _add_errors(form: BaseForm, exc: ValidationError) -> None:
    if hasattr(exc, "error_dict"):
        for name, errors in exc.message_dict.items():
            if name in form.fields:
                form.add_error(name, errors)
            elif name == "secrets" and isinstance(form, PlanForm):
                form.secret_errors.extend(errors)  # shown with the secret rows
            else:
                form.add_error(None, [f"{name}: {message}" for message in errors])
    else:
        form.add_error(None, exc)


def _back(request: HtmxHttpRequest, relocation: Relocation) -> HttpResponse:
    """After an action: the wizard again. A button that went through htmx (a confirm dialog)
    reloads the page, so the messages show."""
    url = reverse("relocations:detail", args=[relocation.pk])
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


# --- list and register ---------------------------------------------------------------------------


@login_required
def relocation_list(request: HtmxHttpRequest) -> HttpResponse:
    relocations = services.visible_to(request.user)
    return render(request, "relocations/relocation_list.html", {"relocations": relocations})


@login_required
def relocation_create(request: HtmxHttpRequest) -> HttpResponse:
    form = RegisterForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            relocation = services.relocation_register(user=request.user, **form.cleaned_data)
        except ValidationError as exc:
            _add_errors(form, exc)
        except PermissionDenied as exc:
            form.add_error("team", str(exc))
        else:
            messages.success(
                request,
                f"{relocation.name} registered. Compare its host key's fingerprint on the VM before anything "
                "runs there.",
            )
            return redirect("relocations:detail", pk=relocation.pk)
    return render(
        request, "relocations/relocation_form.html", {"form": form}, status=400 if form.errors else 200
    )


# --- the wizard ----------------------------------------------------------------------------------


@dataclass
class StepRow:
    step: Step
    # Seconds it took, or has taken so far while it runs.
    seconds: float | None


def _rows(steps: list[Step]) -> list[StepRow]:
    now = timezone.now()
    rows = []
    for step in steps:
        seconds = step.seconds
        if seconds is None and step.state == Step.State.RUNNING and step.started_at is not None:
            seconds = (now - step.started_at).total_seconds()
        rows.append(StepRow(step, seconds))
    return rows


def _fingerprint(key: str) -> str:
    try:
        return fingerprint(key) if key else ""
    except ValueError:
        return ""


def _secret_rows(plan: dict[str, Any], relocation: Relocation) -> dict[str, list[str]]:
    """The plan form's secret rows and mark-secret boxes: those of the plan shown (the saved
    one, else the suggestion), and which secrets have a saved value."""
    return {
        "secret_names": sorted(plan.get("secrets") or {}),
        "saved_secrets": sorted((relocation.plan or {}).get("secrets") or {}),
        "plain_names": sorted(plan.get("env") or {}),
    }


def _plan_form(relocation: Relocation, inspection: Inspection | None) -> tuple[PlanForm | None, str]:
    """The plan form, prefilled with the saved plan or else the suggestion; or why there is none."""
    if relocation.plan:
        initial = dict(relocation.plan)
    else:
        try:
            initial = services.plan_suggestion(relocation)
        except ValidationError as exc:
            return None, _text(exc)
    form = PlanForm(
        # Secrets are rows of their own, their values never put in a page.
        initial={name: value for name, value in initial.items() if name != "secrets"},
        report=relocation.latest_report,
        vm_address=relocation.address,
        pool=planning.pool_for(relocation),
        current=initial,
        **_secret_rows(initial, relocation),
    )
    return form, ""


def _serves_at(relocation: Relocation) -> str:
    """Where the moved app answers: its instance's address, else the address it kept."""
    if relocation.app is not None:
        instance = (
            Instance.objects.select_related("app", "host")
            .filter(app=relocation.app, slot=0)
            .exclude(desired_state=Instance.Desired.REMOVED)
            .first()
        )
        if instance is not None and instance.endpoint:
            return instance.endpoint
    keep = relocation.plan.get("keep_address") or ""
    return f"{keep}:{relocation.plan.get('port')}" if keep else ""


def _live(relocation: Relocation, plan_form: PlanForm | None = None) -> dict[str, Any]:
    """What the polled part of the wizard shows: inspect, plan and run."""
    inspection = relocation.latest_inspection
    state = relocation.state
    plan_note = ""
    # The form while the plan can change; otherwise the saved plan is shown as it is.
    if plan_form is None and state in PLANNABLE:
        plan_form, plan_note = _plan_form(relocation, inspection)
    image_id = str(relocation.plan.get("base_image") or "")
    plan_image = BaseImage.objects.filter(pk=int(image_id)).first() if image_id.isdigit() else None
    steps = _rows(services.steps_of(relocation)) if relocation.attempt else []
    rollback = next((row.step for row in steps if row.step.name == Step.Name.ROLLBACK), None)
    return {
        "relocation": relocation,
        "busy": state in BUSY,
        "inspection": inspection,
        "inspections_count": relocation.inspections.count(),
        "can_inspect": relocation.key_pinned
        and state not in (Relocation.State.RUNNING, Relocation.State.INSPECTING, *Relocation.FINISHED),
        "plan_form": plan_form,
        "plan_note": plan_note,
        "plan_image": plan_image,
        "can_run": state in Relocation.RUNNABLE,
        "can_cancel": state
        not in (
            Relocation.State.RUNNING,
            Relocation.State.INSPECTING,
            Relocation.State.FAILED,
            *Relocation.FINISHED,
        ),
        "steps": steps,
        "rollback": rollback,
        "serves_at": _serves_at(relocation) if state == Relocation.State.DONE else "",
    }


def _page(
    request: HtmxHttpRequest,
    relocation: Relocation,
    *,
    confirm_form: ConfirmKeyForm | None = None,
    install_form: InstallKeyForm | None = None,
    plan_form: PlanForm | None = None,
    status: int = 200,
) -> HttpResponse:
    try:
        portal_key = gateway.portal_public_key()
    except OSError as exc:
        portal_key = ""
        messages.error(request, f"The portal's SSH key cannot be read: {exc}")
    earlier = [
        (attempt, _rows(services.steps_of(relocation, attempt)))
        for attempt in range(relocation.attempt - 1, 0, -1)
    ]
    offered_type = relocation.offered_key.split()[0] if relocation.offered_key else ""
    context = _live(relocation, plan_form) | {
        "offered_fingerprint": _fingerprint(relocation.offered_key),
        "pinned_fingerprint": _fingerprint(relocation.host_key),
        "key_file": KEY_FILES.get(offered_type, "/etc/ssh/ssh_host_ed25519_key.pub"),
        "confirm_form": confirm_form or ConfirmKeyForm(),
        "install_form": install_form or InstallKeyForm(),
        "portal_key": portal_key,
        "earlier": earlier,
    }
    return render(request, "relocations/relocation_detail.html", context, status=status)


@login_required
def relocation_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    relocation = _relocation_or_404(request, pk)
    if request.htmx:
        response = render(request, "relocations/relocation_detail.html#live", _live(relocation))
        if relocation.state not in BUSY:
            # Inspection or run finished: the fragment shows the outcome; tell htmx to stop polling.
            response.status_code = HttpResponseStopPolling.status_code
        return response
    return _page(request, relocation)


@login_required
@require_POST
def relocation_confirm_key(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    relocation = _relocation_or_404(request, pk)
    form = ConfirmKeyForm(request.POST)
    if form.is_valid():
        try:
            services.relocation_confirm_key(
                user=request.user, relocation=relocation, fingerprint_seen=form.cleaned_data["fingerprint"]
            )
        except (ValidationError, PermissionDenied) as exc:
            if isinstance(exc, ValidationError):
                _add_errors(form, exc)
            else:
                form.add_error(None, str(exc))
        else:
            messages.success(
                request, "Host key pinned: the portal talks to this VM only while it shows this key."
            )
            return _back(request, relocation)
    relocation.refresh_from_db()
    return _page(request, relocation, confirm_form=form, status=400)


@sensitive_post_parameters("password")
@login_required
@require_POST
def relocation_install_key(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    relocation = _relocation_or_404(request, pk)
    form = InstallKeyForm(request.POST)
    if form.is_valid():
        try:
            services.relocation_install_key(
                user=request.user, relocation=relocation, password=form.cleaned_data["password"]
            )
        except (ValidationError, PermissionDenied) as exc:
            if isinstance(exc, ValidationError):
                _add_errors(form, exc)
            else:
                form.add_error(None, str(exc))
        else:
            messages.success(
                request,
                f"The portal's key is installed for {relocation.ssh_user}; the password was not kept.",
            )
            return _back(request, relocation)
    relocation.refresh_from_db()
    # The password field is never rendered back (PasswordInput drops its value).
    return _page(request, relocation, install_form=form, status=400)


def _act(request: HtmxHttpRequest, pk: int, service: Any) -> HttpResponse:
    """A button that asks a service to start something: a refusal becomes a message."""
    relocation = _relocation_or_404(request, pk)
    try:
        service(user=request.user, relocation=relocation)
    except (ValidationError, PermissionDenied) as exc:
        messages.error(request, _text(exc))
    return _back(request, relocation)


@login_required
@require_POST
def relocation_inspect(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, services.relocation_inspect)


# The form holds secret values (typed, and in the POST): an error report shows neither.
@sensitive_post_parameters()
@sensitive_variables()
@login_required
@require_POST
def relocation_plan(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    relocation = _relocation_or_404(request, pk)
    try:
        shown = relocation.plan or services.plan_suggestion(relocation)
    except ValidationError:
        shown = {}  # not inspected: the service says so below
    form = PlanForm(
        request.POST,
        report=relocation.latest_report,
        vm_address=relocation.address,
        pool=planning.pool_for(relocation),
        current=request.POST,
        **_secret_rows(shown, relocation),
    )
    if form.is_valid():
        try:
            services.relocation_plan(user=request.user, relocation=relocation, plan=form.plan())
        except ValidationError as exc:
            _add_errors(form, exc)
        except PermissionDenied as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request, "Plan saved. Nothing has changed on the VM; move it when you are ready."
            )
            return _back(request, relocation)
    relocation.refresh_from_db()
    return _page(request, relocation, plan_form=form, status=400)


@login_required
@require_POST
def relocation_run(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, services.relocation_run)


@login_required
@require_POST
def relocation_rollback(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, services.relocation_rollback)


@login_required
@require_POST
def relocation_cancel(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    relocation = _relocation_or_404(request, pk)
    try:
        services.relocation_cancel(user=request.user, relocation=relocation)
    except (ValidationError, PermissionDenied) as exc:
        messages.error(request, _text(exc))
    else:
        messages.success(request, f"The move of {relocation.name} is cancelled; the VM keeps serving.")
    return _back(request, relocation)


# --- inspection reports --------------------------------------------------------------------------


@login_required
def inspection_detail(request: HtmxHttpRequest, pk: int, inspection_id: int) -> HttpResponse:
    relocation = _relocation_or_404(request, pk)
    inspection = get_object_or_404(relocation.inspections, pk=inspection_id)
    report = inspection.report or {}
    main_pid = report.get("main_pid")
    context = {
        "relocation": relocation,
        "inspection": inspection,
        "report": report,
        "main_pid": main_pid,
        "inspections": relocation.inspections.all(),
        "masked": planning.MASK,
    }
    return render(request, "relocations/inspection_detail.html", context)
