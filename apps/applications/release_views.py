"""The app page's Releases tab: deploy a new release from an archive, follow the deploy per
instance, roll back to any kept release."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from apps.applications import releases, selectors
from apps.applications.forms import ReleaseForm, RollbackForm
from apps.applications.models import App
from apps.applications.page_context import instances_context, releases_context
from portal.http import HtmxHttpRequest


def _app_or_404(request: HtmxHttpRequest, slug: str) -> App:
    return get_object_or_404(
        selectors.apps_visible_to(request.user).select_related("team", "base_image", "release"), slug=slug
    )


def _live(request: HtmxHttpRequest, app: App, *, error: str = "", status: int = 200) -> HttpResponse:
    context = releases_context(app) | {"error": error}
    response = render(request, "catalog/_releases.html#releases-live", context, status=status)
    # The Overview follows the deploy: its instances (which start polling) and the release and
    # base image it names.
    app = App.objects.select_related("team", "base_image", "release").get(pk=app.pk)
    overview = instances_context(app) | {"live_oob": True, "oob": True}
    for part in ("live", "current-release", "base-image"):
        response.content += render_to_string(
            f"catalog/app_detail.html#{part}", overview, request=request
        ).encode()
    if context["deploying"] is None and status == 200 and request.method == "GET":
        response.status_code = HttpResponseStopPolling.status_code
    return response


def _form_errors(form: ReleaseForm | RollbackForm) -> str:
    return " ".join(f"{field}: {' '.join(str(m) for m in errors)}" for field, errors in form.errors.items())


def _message(exc: ValidationError | PermissionDenied) -> str:
    return " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)


@login_required
def app_releases(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    """GET: the list and the deploy's progress (polled while a deploy runs). POST: an archive
    becomes the next release and is deployed."""
    app = _app_or_404(request, slug)
    if request.method != "POST":
        if request.htmx:
            return _live(request, app)
        return redirect(reverse("catalog:detail", args=[app.slug]) + "#releases")
    form = ReleaseForm(request.POST, request.FILES)
    error = ""
    if form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            release, _ = releases.release_create(
                user=request.user,
                app=app,
                fileobj=upload.file,
                size=upload.size,
                note=form.cleaned_data["note"],
                batch=form.cleaned_data["batch"],
            )
        except (ValidationError, PermissionDenied) as exc:
            error = "Release refused: " + _message(exc)
        else:
            if not request.htmx:
                messages.success(request, f"Release {release.number} made; it is being deployed.")
    else:
        error = "Release refused: " + _form_errors(form)
    if request.htmx:
        return _live(request, app, error=error, status=422 if error else 200)
    if error:
        messages.error(request, error)
    return redirect(reverse("catalog:detail", args=[app.slug]) + "#releases")


@login_required
@require_POST
def app_rollback(request: HtmxHttpRequest, slug: str, number: int) -> HttpResponse:
    app = _app_or_404(request, slug)
    form = RollbackForm(request.POST)
    error = ""
    if not form.is_valid():
        error = _form_errors(form)
    else:
        try:
            release, _ = releases.release_rollback(
                user=request.user,
                app=app,
                number=number,
                note=form.cleaned_data["note"],
                batch=form.cleaned_data["batch"],
            )
        except (ValidationError, PermissionDenied) as exc:
            error = "Rollback refused: " + _message(exc)
        else:
            if not request.htmx:
                messages.success(
                    request, f"Release {release.number} restores release {number}; it is being deployed."
                )
    if request.htmx:
        return _live(request, app, error=error, status=422 if error else 200)
    if error:
        messages.error(request, error)
    return redirect(reverse("catalog:detail", args=[app.slug]) + "#releases")
