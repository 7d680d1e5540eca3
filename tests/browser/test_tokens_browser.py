"""API tokens in the browser: a developer makes a token, sees its key once (and copies it), finds
it listed, and revokes it; the list and the form answer in place, without a reload."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from apps.accounts.models import ApiToken


def _status(url: str, key: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})  # noqa: S310 - the live server
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the same
            json.loads(response.read())
            return int(response.status)
    except urllib.error.HTTPError as refused:
        return refused.code


def test_a_developer_makes_a_token_sees_it_once_and_revokes_it_in_place(
    page: Page,
    live_server,  # type: ignore[no-untyped-def]
    transactional_db: None,
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    User.objects.create_user("dev", "dev@example.invalid", "pw-dev")
    base = live_server.url
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", "dev")
    page.fill("input[name=password]", "pw-dev")
    page.click("button[type=submit]")
    page.get_by_role("link", name="API tokens").click()
    expect(page.get_by_role("heading", name="API tokens", exact=True)).to_be_visible()
    page.wait_for_load_state()  # htmx (a deferred script) has wired the forms
    expect(page.locator("#token-list")).to_contain_text("No tokens yet.")
    page.evaluate("window.stillTheSamePage = true")

    # A mistake first: the form says what is wrong, in place.
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#token-form .field-error")).to_contain_text("Give the token a name")

    page.fill("input[name=name]", "laptop")
    page.get_by_label("Read and write").check()
    page.select_option("select[name=expires]", "7")
    page.get_by_role("button", name="Create token").click()
    key = page.locator("#new-token").inner_text().strip()
    assert re.fullmatch(r"slw_[A-Za-z0-9]{40}", key), key
    row = page.locator('#token-list tr[data-token="laptop"]')
    expect(row).to_contain_text("Read and write")
    expect(row).to_contain_text(f"{key[:12]}…")
    expect(row).to_contain_text("never")
    expect(row).to_have_attribute("data-state", "active")
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == key
    assert page.evaluate("window.stillTheSamePage") is True
    screenshot("created")

    assert _status(f"{base}/api/v1/apps/", key) == 200

    # Shown once: after a reload only its first characters remain, with its last use.
    page.reload()
    expect(page.locator("#new-token")).to_have_count(0)
    assert key not in page.content()
    expect(row).to_contain_text("from 127.0.0.1")
    page.wait_for_load_state()
    page.evaluate("window.stillTheSamePage = true")

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke").click()
    expect(row).to_have_attribute("data-state", "revoked")
    expect(page.locator("#token-list [role=status]")).to_contain_text("Revoked 'laptop'")
    expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
    assert page.evaluate("window.stillTheSamePage") is True
    screenshot("revoked")
    assert ApiToken.objects.get(name="laptop").revoked_at is not None
    assert _status(f"{base}/api/v1/apps/", key) == 401
