"""CSRF failures (settings.CSRF_FAILURE_VIEW).

The usual cause here is a page older than the session: the user signed out, or signed in again in
another tab (which rotates the token), and the page still sends the old token with every htmx
request. htmx does not show a 403 page, so the click would seem to do nothing: an htmx request
gets a short notice with a link that reloads the page instead, swapped into the page's alert area
(`#page-alerts` in base.html). Other requests get Django's own page."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.csrf import csrf_failure as django_csrf_failure
from django_htmx.http import retarget
from django_htmx.middleware import HtmxDetails

ALERTS = "#page-alerts"


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    # HtmxMiddleware has usually set request.htmx by now; reading the headers does not rely on it.
    htmx = HtmxDetails(request)
    if not htmx:
        return django_csrf_failure(request, reason=reason)
    # Only a page of this site (same scheme and host), so the link cannot lead elsewhere.
    back = htmx.current_url_abs_path or reverse("home")
    # No whitespace around the element: htmx scrolls the first swapped node into view.
    body = render_to_string("csrf_stale.html", {"back": back}).strip()
    response = retarget(HttpResponse(body, status=403), ALERTS)
    # Replaces an earlier notice rather than stacking; `show:top` brings it into view when the
    # click was further down the page.
    response["HX-Reswap"] = "innerHTML show:top"
    return response
