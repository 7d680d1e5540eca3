"""A page whose CSRF token went stale (the user signed in again in another tab): an htmx click gets a
short "reload" notice at the top of the page instead of a 403 page htmx would not show; a plain
form post gets Django's own CSRF page."""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from apps.accounts.models import Team
from apps.applications import services
from apps.applications.models import App, BaseImage
from apps.instances.models import Operation

if TYPE_CHECKING:  # the test client's response type exists only in django-stubs
    from django.test.client import _MonkeyPatchedWSGIResponse as Response

PAGE = "http://testserver/apps/web/"


@pytest.fixture
def web(owner: User, alpha: Team, image: BaseImage) -> App:
    return services.app_create(user=owner, team=alpha, slug="web", base_image=image)


@pytest.fixture
def browser(owner: User) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    return client


def _page_token(client: Client, app: App) -> str:
    """The token the page sends with every htmx request (body's hx-headers)."""
    page = client.get(reverse("catalog:detail", args=[app.slug]))
    assert page.status_code == 200
    found = re.search(r"<body hx-headers='([^']*)'>", page.content.decode())
    assert found, "the page's body carries no hx-headers"
    headers = html.unescape(found.group(1))
    token = re.fullmatch(r'\{"X-CSRFToken": "([A-Za-z0-9]+)"\}', headers)
    assert token, headers
    return token.group(1)


def _sign_in_again(client: Client) -> None:
    """What another tab does: the login form, which rotates the CSRF token."""
    response = client.post(
        reverse("login"),
        {
            "username": "owner",
            "password": "pw-owner",
            "csrfmiddlewaretoken": client.cookies["csrftoken"].value,
        },
    )
    assert response.status_code == 302


def _scale(client: Client, app: App, token: str, *, htmx: bool = True, current: str = PAGE) -> Response:
    headers = {"X-CSRFToken": token}
    if htmx:
        headers |= {"HX-Request": "true", "HX-Current-URL": current, "HX-Target": "live"}
    return client.post(reverse("catalog:scale", args=[app.slug]), {"instances": 2}, headers=headers)


def test_the_page_has_a_place_for_page_alerts(browser: Client, web: App) -> None:
    page = browser.get(reverse("catalog:detail", args=[web.slug])).content.decode()
    assert re.search(r'<main>\s*<div id="page-alerts" aria-live="polite"></div>', page)
    assert '{"code": "403", "swap": true}, {"code": "[45]..", "swap": false, "error": true}' in page


def test_a_stale_token_on_an_htmx_post_gets_the_reload_notice_at_the_top(browser: Client, web: App) -> None:
    stale = _page_token(browser, web)
    _sign_in_again(browser)
    response = _scale(browser, web, stale)
    assert response.status_code == 403
    assert response["HX-Retarget"] == "#page-alerts"
    assert response["HX-Reswap"] == "innerHTML show:top"
    assert response.content.decode() == (
        '<p class="error" role="alert" id="stale-page">This page is out of date (you signed in again '
        'elsewhere, or your session ended). <a href="/apps/web/">Reload</a> to go on.</p>'
    )
    web.refresh_from_db()
    assert web.instances == 0 and not web.operations.exists()


def test_the_reload_link_never_leads_off_the_site(browser: Client, web: App) -> None:
    stale = _page_token(browser, web)
    _sign_in_again(browser)
    for elsewhere in ("https://evil.example/apps/web/", "javascript:alert(1)", "https://testserver/apps/"):
        response = _scale(browser, web, stale, current=elsewhere)
        assert response.status_code == 403
        assert '<a href="/">Reload</a>' in response.content.decode(), elsewhere


def test_the_token_of_a_reloaded_page_goes_through(browser: Client, web: App) -> None:
    _page_token(browser, web)
    _sign_in_again(browser)
    fresh = _page_token(browser, web)
    response = _scale(browser, web, fresh)
    assert response.status_code == 200
    assert 'id="live"' in response.content.decode()
    assert "HX-Retarget" not in response
    web.refresh_from_db()
    assert web.instances == 2
    assert web.operations.get().kind == Operation.Kind.SCALE


def test_the_csrf_cookie_is_accepted_as_the_token_too(browser: Client, web: App) -> None:
    _page_token(browser, web)
    response = _scale(browser, web, browser.cookies["csrftoken"].value)
    assert response.status_code == 200


def test_a_plain_form_post_with_a_stale_token_gets_djangos_csrf_page(browser: Client, web: App) -> None:
    stale = _page_token(browser, web)
    _sign_in_again(browser)
    response = _scale(browser, web, stale, htmx=False)
    assert response.status_code == 403
    body = response.content.decode()
    assert "CSRF verification failed" in body and "stale-page" not in body
    assert "HX-Retarget" not in response and "HX-Reswap" not in response
    web.refresh_from_db()
    assert web.instances == 0
