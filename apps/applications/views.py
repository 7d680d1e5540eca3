from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.forms import BaseForm
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling

from apps.accounts import permissions
from apps.applications import selectors, services
from apps.applications.forms import AddressForm, AppCreateForm, AppEditForm, DeleteForm, ScaleForm
from apps.applications.models import App
from apps.applications.page_context import instances_context, releases_context
from apps.console.services import named_commands
from apps.console.views import app_logs_context
from apps.events import selectors as timeline
from apps.hosts.models import Host
from apps.instances.models import Instance, Operation
from apps.network.services import address_request
from apps.resources.views import app_resources_context
from portal.http import HtmxHttpRequest


def _app_or_404(request: HtmxHttpRequest, slug: str) -> App:
    return get_object_or_404(
        selectors.apps_visible_to(request.user).select_related("team", "base_image"), slug=slug
    )


def _add_errors(form: BaseForm, exc: ValidationError) -> None:
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc)


def _errors_text(form: BaseForm) -> str:
    return " ".join(str(message) for errors in form.errors.values() for message in errors)


APPS_PER_PAGE = 50


@login_required
def app_list(request: HtmxHttpRequest) -> HttpResponse:
    apps = selectors.app_list(request.user)
    query = request.GET.get("q", "").strip()
    if query:
        apps = apps.filter(slug__icontains=query)
    team = request.GET.get("team", "")
    if team:
        apps = apps.filter(team__slug=team)
    page = Paginator(apps, APPS_PER_PAGE).get_page(request.GET.get("page"))
    deleting = any(getattr(app, "deleting", False) for app in page)
    context = {
        "page": page,
        "deleting": deleting,
        "query": query,
        "team": team,
        "teams": permissions.teams_of(request.user).order_by("slug"),
    }
    template = "catalog/app_list.html#app-table" if request.htmx else "catalog/app_list.html"
    response = render(request, template, context)
    if request.htmx and not deleting:
        response.status_code = 286  # nothing being deleted any more: a poll stops here
    return response


# These forms take secret values: an error report shows neither the POST nor the variables.
@sensitive_post_parameters()
@sensitive_variables()
@login_required
def app_create(request: HtmxHttpRequest) -> HttpResponse:
    form = AppCreateForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            app = services.app_create(user=request.user, **form.cleaned_data)
        except ValidationError as exc:
            _add_errors(form, exc)
        except PermissionDenied as exc:
            form.add_error("team", str(exc))
        else:
            messages.success(request, f"App {app.slug} created.")
            return redirect("catalog:detail", slug=app.slug)
    context = {"form": form, "volume_mount": settings.APP_VOLUME_MOUNT}
    return render(request, "catalog/app_form.html", context, status=400 if form.errors else 200)


@login_required
def app_detail(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    app = _app_or_404(request, slug)
    context = instances_context(app)
    if request.htmx:
        response = render(request, "catalog/app_detail.html#live", context)
        # The Releases tab follows a deploy started here (an edit, a roll onto another version).
        response.content += render_to_string(
            "catalog/_releases.html#releases-live", releases_context(app) | {"oob": True}, request=request
        ).encode()
        if context["settled"]:
            # Everything is where it should be: tell htmx to stop polling. The Resources card's
            # figures (instances, hosts, usage) changed with it: they come along out of band.
            app.refresh_from_db()
            card = {"app": app, "resources": app_resources_context(request.user, app), "oob": True}
            for part in ("resource-facts", "resource-usage"):
                response.content += render_to_string(
                    f"resources/_app_resources.html#{part}", card, request=request
                ).encode()
            response.status_code = HttpResponseStopPolling.status_code
        return response
    context.update(
        scale_form=ScaleForm(initial={"instances": app.instances}),
        delete_form=DeleteForm(app=app),
        address_form=AddressForm(),
        move_targets=Host.objects.filter(state=Host.State.ACTIVE) if permissions.is_ops(request.user) else [],
        volume_mount=app.volume_mount or settings.APP_VOLUME_MOUNT,
        metrics_interval=f"{settings.METRICS_INTERVAL:g}",
        named_commands=named_commands(app),
        running_instances=[i for i in context["instances"] if i.state == Instance.State.RUNNING],
        resources=app_resources_context(request.user, app),
        timeline_categories=list(timeline.CATEGORIES.items()),
        logs_panel=app_logs_context(),
        timeline_slots=[(i.slot, i.container_name) for i in context["instances"]],
        **releases_context(app),
    )
    return render(request, "catalog/app_detail.html", context)


def _live_or_redirect(request: HtmxHttpRequest, app: App, status: int = 200) -> HttpResponse:
    if request.htmx:
        return render(request, "catalog/app_detail.html#live", instances_context(app), status=status)
    return redirect("catalog:detail", slug=app.slug)


@login_required
@require_POST
def app_scale(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    app = _app_or_404(request, slug)
    form = ScaleForm(request.POST)
    error = ""
    if form.is_valid():
        try:
            services.app_scale(user=request.user, app=app, instances=form.cleaned_data["instances"])
        except ValidationError as exc:
            error = " ".join(exc.messages)
        except PermissionDenied as exc:
            error = str(exc)
    else:
        error = "Instances: " + _errors_text(form)
    if error:
        if request.htmx:
            context = instances_context(app) | {"error": error}
            return render(request, "catalog/app_detail.html#live", context, status=422)
        messages.error(request, error)
    app.refresh_from_db()
    return _live_or_redirect(request, app)


@login_required
@require_POST
def app_upgrade(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """Roll the app's instances onto another version of its base image."""
    app = _app_or_404(request, slug)
    error = ""
    image = selectors.versions_to_roll_onto(app).filter(pk=_int(request.POST.get("base_image"))).first()
    if image is None:
        allowed = ", ".join(v.reference for v in selectors.versions_to_roll_onto(app)) or "none"
        error = f"Pick a published version of {app.base_image.name} to roll onto (available: {allowed})."
    else:
        try:
            op = services.app_upgrade(user=request.user, app=app, base_image=image)
        except ValidationError as exc:
            error = " ".join(exc.messages)
        except PermissionDenied as exc:
            error = str(exc)
        else:
            if op is None and not request.htmx:
                messages.info(request, f"{app.slug} is on {image.reference} already.")
    if error:
        if request.htmx:
            return render(
                request,
                "catalog/app_detail.html#live",
                instances_context(app) | {"error": error},
                status=422,
            )
        messages.error(request, error)
    app.refresh_from_db()
    return _live_or_redirect(request, app)


@login_required
@require_POST
def instance_action(request: HtmxHttpRequest, slug: str, pk: int, action: str) -> HttpResponse:
    app = _app_or_404(request, slug)
    instance = get_object_or_404(app.instance_set, pk=pk)
    try:
        services.instance_action(user=request.user, instance=instance, action=action)
    except (ValidationError, PermissionDenied) as exc:
        message = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        if request.htmx:
            return render(
                request,
                "catalog/app_detail.html#live",
                instances_context(app) | {"error": message},
                status=422,
            )
        messages.error(request, message)
    return _live_or_redirect(request, app)


@sensitive_post_parameters()
@sensitive_variables()
@login_required
def app_edit(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    app = _app_or_404(request, slug)
    # The form edits its own copy: validating a ModelForm writes into its instance, and the
    # service must compare the new values with the app as it is.
    form = AppEditForm(request.POST or None, instance=App.objects.get(pk=app.pk))
    if request.method == "POST" and form.is_valid():
        changes = {
            field: form.cleaned_data[field] for field in form.changed_data if not form.is_secret_field(field)
        }
        # Only names with a new value or deleted: the others keep their sealed values.
        for name in ("secrets", "make_secret"):
            if form.cleaned_data[name]:
                changes[name] = form.cleaned_data[name]
        try:
            services.app_update(user=request.user, app=app, **changes)
        except ValidationError as exc:
            _add_errors(form, exc)
        else:
            messages.success(
                request,
                "Saved." + (" A new release is deployed, one instance at a time." if changes else ""),
            )
            return redirect("catalog:detail", slug=app.slug)
    return render(
        request, "catalog/app_edit.html", {"app": app, "form": form}, status=400 if form.errors else 200
    )


@login_required
@require_POST
def app_delete(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    app = _app_or_404(request, slug)
    form = DeleteForm(request.POST, app=app)
    if not form.is_valid():
        error = _errors_text(form)
        if request.htmx:
            # Said next to the box, where the person is looking, not at the top of the page.
            context = {"app": app, "delete_error": error, "confirm_value": request.POST.get("confirm", "")}
            return render(request, "catalog/app_detail.html#delete-form", context, status=422)
        messages.error(request, error)
        return redirect(reverse("catalog:detail", args=[app.slug]) + "#delete-app")
    services.app_delete(user=request.user, app=app)
    messages.success(
        request, f"{app.slug} is being deleted; its volume data stays on the hosts until ops purge it."
    )
    if request.htmx:
        return HttpResponseClientRedirect(reverse("catalog:list"))
    return redirect("catalog:list")


@login_required
def app_activity(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    app = _app_or_404(request, slug)
    page = Paginator(app.operations.select_related("requested_by", "instance"), 50).get_page(
        request.GET.get("page")
    )
    return render(request, "catalog/app_activity.html", {"app": app, "page": page})


@login_required
@require_POST
def app_address(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """Reserve a specific static address for a slot (a migrated VM's IP, say)."""
    app = _app_or_404(request, slug)
    form = AddressForm(request.POST)
    if form.is_valid():
        try:
            allocation = address_request(
                user=request.user,
                app=app,
                address=form.cleaned_data["address"],
                slot=form.cleaned_data["slot"],
            )
        except ValidationError as exc:
            messages.error(request, "Address refused: " + " ".join(exc.messages))
        except PermissionDenied as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"{allocation.address} is reserved for slot {allocation.slot}.")
    else:
        messages.error(request, "Address refused: " + _errors_text(form))
    return redirect("catalog:detail", slug=app.slug)


@login_required
@require_POST
def instance_move(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    app = _app_or_404(request, slug)
    instance = app.instance_set.filter(pk=_int(request.POST.get("instance"))).first()
    host = Host.objects.filter(pk=_int(request.POST.get("host"))).first()
    try:
        if instance is None or host is None:
            raise ValidationError("Pick the instance and the host to move it to.")
        services.instance_move(user=request.user, instance=instance, host=host)
    except (ValidationError, PermissionDenied) as exc:
        message = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        messages.error(request, message)
    else:
        messages.success(request, f"Moving {instance.container_name} to {host.name}.")
    return redirect("catalog:detail", slug=app.slug)


def _int(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


ACTIVITY_PAGE = 50


@login_required
def activity(request: HtmxHttpRequest) -> HttpResponse:
    """Everything the portal did, newest first: ops see every app's, others their teams'.
    Filters narrow it (app, team, kind, status, who); the list follows what is still running."""
    ops = permissions.is_ops(request.user)
    teams = permissions.teams_of(request.user).order_by("slug")
    operations = Operation.objects.select_related("requested_by", "instance", "app__team")
    if not ops:
        operations = operations.filter(app__team__in=teams)
    wanted = {key: request.GET.get(key, "").strip() for key in ("app", "team", "kind", "status", "by")}
    if wanted["app"]:
        operations = operations.filter(app_slug__icontains=wanted["app"])
    if wanted["team"]:
        operations = operations.filter(app__team__slug=wanted["team"])
    if wanted["kind"] in Operation.Kind.values:
        operations = operations.filter(kind=wanted["kind"])
    if wanted["status"] in Operation.Status.values:
        operations = operations.filter(status=wanted["status"])
    if wanted["by"] == "slipway":
        operations = operations.filter(requested_by=None)
    elif wanted["by"]:
        operations = operations.filter(requested_by__username=wanted["by"])
    page = Paginator(operations.order_by("-created_at", "-pk"), ACTIVITY_PAGE).get_page(
        request.GET.get("page")
    )
    context = {
        "page": page,
        "wanted": wanted,
        "query": request.GET.urlencode(),
        "teams": teams,
        "kinds": Operation.Kind.choices,
        "statuses": Operation.Status.choices,
        "ops": ops,
        "live": any(op.status not in Operation.TERMINAL for op in page),
    }
    template = "catalog/activity.html#activity-list" if request.htmx else "catalog/activity.html"
    return render(request, template, context)
