"""The API docs page works on a network without internet: Swagger UI comes from the portal's own
static files, inside the site's navigation, and the page asks nothing of any other host."""

from __future__ import annotations

import json
import re
import urllib.request
from urllib.parse import urlsplit

from django.contrib.auth.models import User
from playwright.sync_api import Page, expect


def test_a_developer_opens_the_api_docs_and_everything_comes_from_the_portal(
    page: Page,
    live_server,
    transactional_db: None,
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    User.objects.create_user("dev", "dev@example.invalid", "pw-dev")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "dev")
    page.fill("input[name=password]", "pw-dev")
    page.click("button[type=submit]")
    page.get_by_role("link", name="API docs").click()
    expect(page.get_by_role("heading", name="API docs", exact=True)).to_be_visible()
    # Swagger UI drew the schema: its title and an operation of ours.
    expect(page.locator("#swagger-ui .info .title")).to_contain_text("Slipway API", timeout=15_000)
    expect(page.locator("#swagger-ui")).to_contain_text("/api/v1/apps/")
    # The site's navigation is around it.
    expect(page.locator("header.top nav")).to_contain_text("Apps")
    screenshot("api-docs")
    portal = urlsplit(live_server.url).netloc
    elsewhere = [url for url in requested if re.match(r"https?://", url) and urlsplit(url).netloc != portal]
    assert not elsewhere, elsewhere


def test_the_token_page_shows_a_curl_line_that_works_as_it_is(
    page: Page,
    live_server,
    transactional_db: None,
) -> None:
    User.objects.create_user("dev", "dev@example.invalid", "pw-dev")
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "dev")
    page.fill("input[name=password]", "pw-dev")
    page.click("button[type=submit]")
    page.get_by_role("link", name="API tokens").click()
    expect(page.locator("#api-example")).to_contain_text('curl -H "Authorization: Token <your token>"')
    page.fill("input[name=name]", "docs example")  # read only, 30 days: the defaults
    page.get_by_role("button", name="Create token").click()
    example = page.locator("#token-example").inner_text()
    match = re.fullmatch(r'curl -H "Authorization: Token (\w+)" (\S+)', example.strip())
    assert match, example
    # The line as shown, run: the token lists the user's apps.
    url = match.group(2)
    assert url == f"{live_server.url}/api/v1/apps/"
    request = urllib.request.Request(url, headers={"Authorization": f"Token {match.group(1)}"})  # noqa: S310 - the portal's own URL, checked above
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the same
        assert response.status == 200
        assert "results" in json.loads(response.read())
