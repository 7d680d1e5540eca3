"""The base image catalog: versions with their state, where they are loaded and who runs them;
ops publish versions and roll many apps onto one from here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from apps.accounts import permissions
from apps.applications import selectors, services
from apps.applications.models import App, BaseImage, BuildState
from apps.images import publish, versions
from apps.images.forms import ImageForm, VersionForm
from apps.images.starters import STARTERS
from apps.instances.models import Operation
from portal.http import HtmxHttpRequest


def _context() -> dict[str, Any]:
    versions = list(selectors.image_usage().prefetch_related("hosts").order_by("name", "-created_at"))
    apps_by_image: dict[int, list[str]] = {}
    for image_id, slug in App.objects.values_list("base_image_id", "slug").order_by("slug"):
        apps_by_image.setdefault(image_id, []).append(slug)
    rolls = list(
        Operation.objects.filter(
            kind__in=[Operation.Kind.UPGRADE, Operation.Kind.RELEASE],
            status__in=[Operation.Status.QUEUED, Operation.Status.RUNNING],
        ).order_by("created_at")
    )
    for version in versions:
        version.app_slugs = apps_by_image.get(version.pk, [])  # type: ignore[attr-defined]
        # Apps on other versions of this image, which ops could roll onto this one.
        version.behind = sum(  # type: ignore[attr-defined]
            len(apps_by_image.get(other.pk, []))
            for other in versions
            if other.name == version.name and other.pk != version.pk
        )
    busy = any(v.state in (BuildState.BUILDING, BuildState.LOADING) for v in versions) or bool(rolls)
    return {"versions": versions, "rolls": rolls, "busy": busy}


@login_required
def image_list(request: HtmxHttpRequest) -> HttpResponse:
    context = _context()
    if request.htmx:
        response = render(request, "catalog/images.html#images-live", context)
        if not context["busy"]:
            response.status_code = HttpResponseStopPolling.status_code
        return response
    return render(request, "catalog/images.html", context)


def _act(
    request: HtmxHttpRequest, call: Callable[[], object], *, done: str, refused: str = ""
) -> HttpResponse:
    """Publish or Cancel: from the page (htmx), the live table again with what happened above it
    (422 when the service refused, with its reason after `refused`), so it updates in place and
    polls while work goes on; without JavaScript, the message and the page."""
    try:
        call()
    except ValidationError as exc:
        return _answer(request, refused + " ".join(exc.messages), failed=True)
    except PermissionDenied as exc:
        return _answer(request, str(exc), failed=True)
    return _answer(request, done, failed=False)


def _answer(request: HtmxHttpRequest, notice: str, *, failed: bool) -> HttpResponse:
    if request.htmx:
        context = {**_context(), "notice": notice, "refused": failed}
        return render(request, "catalog/images.html#images-live", context, status=422 if failed else 200)
    (messages.error if failed else messages.success)(request, notice)
    return redirect("images:list")


@login_required
@require_POST
def image_publish(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    image = get_object_or_404(BaseImage, pk=pk)
    return _act(
        request,
        lambda: publish.image_publish(user=request.user, image=image),
        done=f"Building {image.reference}; it is loaded onto the hosts next.",
        refused=f"{image.reference} not published: ",
    )


@login_required
@require_POST
def image_cancel(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    image = get_object_or_404(BaseImage, pk=pk)
    return _act(
        request,
        lambda: publish.image_cancel(user=request.user, image=image),
        done=f"Cancelled the publish of {image.reference}.",
    )


def _made(request: HtmxHttpRequest, form: forms.Form, make: Callable[[], BaseImage]) -> HttpResponse | None:
    """A draft made from a valid form: to its row on the Base images page; None (the form
    holds the service's problems, each on its field) when it was refused."""
    try:
        image = make()
    except ValidationError as exc:
        for field, problems in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, problems)
        return None
    messages.success(request, f"{image.reference} is a draft: Publish builds it and loads it onto the hosts.")
    return redirect(f"{reverse('images:list')}#version-{image.pk}")


@login_required
def image_new(request: HtmxHttpRequest) -> HttpResponse:
    """Ops: a new base image, blank or from a ready-made recipe (Java, Node.js, Python)."""
    if not permissions.is_ops(request.user):
        raise PermissionDenied("Only ops make base images.")
    key = request.GET.get("starter", "")
    starter = STARTERS.get(key)
    form = ImageForm(request.POST) if request.method == "POST" else ImageForm.from_starter(starter)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            made = _made(request, form, lambda: versions.image_create(user=request.user, **form.cleaned_data))
            if made:
                return made
        status = 422
    context = {"form": form, "starters": STARTERS.values(), "starter": starter}
    return render(request, "catalog/image_new.html", context, status=status)


@login_required
@require_POST
def image_roll(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Ops: every app on another version of this image rolls onto it."""
    image = get_object_or_404(BaseImage, pk=pk)
    try:
        started, refused = services.apps_upgrade(user=request.user, target=image)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    except PermissionDenied as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            f"Rolling {len(started)} app(s) onto {image.reference}: "
            + (", ".join(op.app_slug for op in started) or "none had instances to roll")
            + ".",
        )
        for why in refused:
            messages.error(request, f"Not rolled: {why}")
    return redirect("images:list")


@login_required
def image_new_version(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Ops: a new draft version of an image, made from this one (its recipe copied for editing)."""
    base = get_object_or_404(BaseImage, pk=pk)
    if not permissions.is_ops(request.user):
        raise PermissionDenied("Only ops make base image versions.")
    form = (
        VersionForm(request.POST)
        if request.method == "POST"
        else VersionForm.from_image(base, versions.next_tag(base))
    )
    status = 200
    if request.method == "POST":
        if form.is_valid():
            made = _made(
                request,
                form,
                lambda: versions.version_create(user=request.user, base=base, **form.cleaned_data),
            )
            if made:
                return made
        else:
            # The tag and recipe are checked too, so every problem shows in one round.
            draft = BaseImage(
                name=base.name, tag=request.POST.get("tag", "").strip(), recipe=request.POST.get("recipe", "")
            )
            for field, problems in versions.problems(base, draft).items():
                if field in ("tag", "recipe") and not form.has_error(field):
                    form.add_error(field, problems)
        status = 400
    return render(request, "catalog/image_version_new.html", {"base": base, "form": form}, status=status)


@login_required
@require_POST
def image_recommend(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    image = get_object_or_404(BaseImage, pk=pk)
    try:
        versions.version_recommend(user=request.user, image=image)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    except PermissionDenied as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{image.reference} is the recommended version of {image.name}.")
    return redirect("images:list")
