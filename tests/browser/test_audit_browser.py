"""The audit trail in the browser: ops find a change by typing and choosing filters, the rows
change in place (no reload), the address bar keeps the filters, the export takes them along."""

from __future__ import annotations

from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from apps.audit import services as audit
from apps.audit.context import acting


def test_ops_filter_the_audit_trail_in_place_and_export_what_they_see(
    page: Page,
    live_server,  # type: ignore[no-untyped-def]
    transactional_db: None,
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    User.objects.create_user("ops", "ops@example.invalid", "pw-ops", is_staff=True)
    dev = User.objects.create_user("dev", "dev@example.invalid", "pw-dev")
    audit.record("app.scale", "scale shop 1 → 3", actor=dev, object_type="app", object_repr="shop")
    audit.record("host.drain", "drain lab-h2 (4 instances to move)", object_type="host", object_repr="lab-h2")
    with acting("reconcile"):
        audit.record(
            "app.reconcile", "slw-shop-1 was missing; re-create", object_type="app", object_repr="shop"
        )
    base = live_server.url
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", "ops")
    page.fill("input[name=password]", "pw-ops")
    page.click("button[type=submit]")
    page.get_by_role("link", name="Audit").click()
    expect(page.get_by_role("heading", name="Audit trail")).to_be_visible()
    page.wait_for_load_state()
    rows = page.locator("#audit-rows tbody tr")
    expect(rows).to_have_count(4)  # the three above, and ops' own sign-in, newest first
    expect(rows.first).to_contain_text("ops signed in")
    page.evaluate("window.stillTheSamePage = true")

    page.fill("input[name=q]", "shop")
    expect(rows).to_have_count(2)
    page.select_option("select[name=source]", "reconcile")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Slipway")
    expect(rows.first).to_contain_text("slw-shop-1 was missing")
    assert "source=reconcile" in page.url and "q=shop" in page.url
    href = page.locator("#export-csv").get_attribute("href") or ""
    assert "source=reconcile" in href and "q=shop" in href

    # A bad date: said in place, and no rows claimed.
    page.fill("input[name=since]", "2026-02-02")
    page.fill("input[name=until]", "2026-02-01")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#audit-rows .error")).to_contain_text("The end is before the start.")
    assert page.evaluate("window.stillTheSamePage") is True
    screenshot("audit-filtered")
