from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from apps.hosts.models import Host


@login_required
def home(request: HttpRequest) -> HttpResponse:
    memberships = request.user.memberships.select_related("team")  # type: ignore[union-attr]
    context = {"memberships": memberships}
    if request.user.is_staff:
        context["host_counts"] = {
            state: Host.objects.filter(state=state).count() for state in Host.State.values
        }
    return render(request, "accounts/home.html", context)


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for `make up` and monitors: the web process answers and the database is reachable."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"ok": True})
