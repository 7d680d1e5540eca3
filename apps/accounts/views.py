from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from rest_framework.authtoken.models import Token

from apps.accounts import permissions
from apps.hosts.models import Host
from portal.http import AuthedHttpRequest


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


@login_required
def token_page(request: AuthedHttpRequest) -> HttpResponse:
    """Create, rotate and revoke the user's API token. The key is shown once, right after creation."""
    token = Token.objects.filter(user=request.user).first()
    new_key = request.session.pop("new_token_key", None)
    return render(request, "accounts/token.html", {"token": token, "new_key": new_key})


@login_required
@require_POST
def token_create(request: AuthedHttpRequest) -> HttpResponse:
    Token.objects.filter(user=request.user).delete()
    token = Token.objects.create(user=request.user)
    request.session["new_token_key"] = token.key
    messages.success(request, "New token created; any older token stopped working.")
    return redirect("token")


@login_required
@require_POST
def token_revoke(request: AuthedHttpRequest) -> HttpResponse:
    deleted, _ = Token.objects.filter(user=request.user).delete()
    messages.success(request, "Token revoked." if deleted else "You had no token.")
    return redirect("token")
