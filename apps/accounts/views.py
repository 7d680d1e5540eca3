from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from apps.accounts import permissions, tokens
from apps.accounts.forms import ApiTokenForm
from apps.hosts.models import Host
from portal.http import AuthedHttpRequest, HtmxHttpRequest


class AuthedHtmxRequest(AuthedHttpRequest, HtmxHttpRequest):
    """Behind login_required and django-htmx."""


@login_required
def home(request: HttpRequest) -> HttpResponse:
    memberships = request.user.memberships.select_related("team")  # type: ignore[union-attr]
    context = {"memberships": memberships}
    if permissions.is_ops(request.user):
        context["host_counts"] = {
            state: Host.objects.filter(state=state).count() for state in Host.State.values
        }
    return render(request, "accounts/home.html", context)


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for `make up` and monitors: the web process answers and the database is reachable."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"ok": True})


def _tokens_context(user: Any, form: ApiTokenForm | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "tokens": tokens.api_tokens_of(user).select_related("revoked_by"),
        "form": form or ApiTokenForm(),
        "max_days": settings.API_TOKEN_MAX_DAYS,
        **extra,
    }


@login_required
def token_page(request: AuthedHttpRequest) -> HttpResponse:
    """The user's API tokens: list, create (the key shown once), revoke."""
    return render(request, "accounts/token.html", _tokens_context(request.user))


@login_required
@require_POST
def token_create(request: AuthedHtmxRequest) -> HttpResponse:
    form = ApiTokenForm(request.POST)
    created = None
    if form.is_valid():
        try:
            created = tokens.api_token_create(
                user=request.user,
                name=form.cleaned_data["name"],
                scope=form.cleaned_data["scope"],
                expires_at=form.cleaned_data["expires_at"],
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
    # The key goes straight into this answer (never into the session store), and only here.
    context = _tokens_context(request.user, form=None if created else form, created=created)
    template = "accounts/token.html#tokens" if request.htmx else "accounts/token.html"
    return render(request, template, context, status=201 if created else 422)


@login_required
@require_POST
def token_revoke(request: AuthedHtmxRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(tokens.api_tokens_of(request.user), pk=pk)
    error = notice = ""
    try:
        tokens.api_token_revoke(user=request.user, token=token)
    except ValidationError as exc:
        error = " ".join(exc.messages)
    else:
        notice = f"Revoked {token.name!r} ({token.prefix}…): it stopped working at once."
    if not request.htmx:
        if error:
            messages.error(request, error)
        else:
            messages.success(request, notice)
        return redirect("token")
    context = _tokens_context(request.user, error=error, notice=notice)
    return render(request, "accounts/token.html#token-list", context, status=422 if error else 200)
