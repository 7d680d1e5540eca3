"""A team lead sets up alerts in Chromium: a webhook refused with the reason, then added (its
secret shown once); the team's own threshold; then an alert on one of the team's apps lights the
Alerts badge without a reload, and opening it marks it read."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from apps.accounts.models import Membership, Team
from apps.alerts import services
from apps.alerts.models import Kind, Rule, Webhook
from apps.applications.models import App
from apps.hosts.models import Host
from apps.instances.models import Instance
from apps.lab import fleet
from apps.lab.register import register_images
from tests.browser.conftest import login


def test_a_lead_adds_a_webhook_tunes_a_rule_and_sees_an_alert_arrive(
    page: Page,
    asgi_server: str,
    live_lab_hosts: list[Host],
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    (image,) = register_images(("busybox",), log=lambda _: None)
    team = Team.objects.create(slug="shop", name="Shop")
    lead = User.objects.create_user("lead", "lead@example.invalid", "pw-lead")
    Membership.objects.create(team=team, user=lead, role=Membership.Role.LEAD)
    app = App.objects.create(slug="cart", team=team, base_image=image, instances=1)
    instance = Instance.objects.create(
        app=app, slot=0, host=live_lab_hosts[0], memory_mb=64, cpus=Decimal("0.25")
    )
    portal_ip = fleet.LabConfig.from_settings().portal_ip

    login(page, asgi_server, "lead")
    page.locator("header nav").get_by_role("link", name="Alerts").click()
    expect(page.locator("#firing")).to_contain_text("Nothing is firing.")

    # A webhook: refused with the reason first, then added with its secret shown once.
    page.get_by_role("link", name="webhooks").click()
    page.get_by_label("Name").fill("load balancer")
    page.get_by_label("URL").fill("http://127.0.0.1:9000/hook")
    page.get_by_role("button", name="Add").click()
    expect(page.get_by_role("alert")).to_contain_text("127.0.0.1, a loopback address (this machine): refused")
    page.get_by_label("URL").fill(f"http://{portal_ip}:9000/hook")
    page.get_by_role("button", name="Add").click()
    hook = Webhook.objects.get(team=team)
    expect(page.locator("[data-secret]")).to_have_text(hook.secret_opened())  # kept sealed, shown opened
    assert len(hook.secret_opened()) == 64 and hook.secret_opened() not in hook.secret_sealed
    expect(page.get_by_role("link", name="load balancer")).to_be_visible()
    page.reload()
    expect(page.locator("[data-secret]")).to_have_count(0)  # shown once

    # The team's own memory threshold.
    page.goto(f"{asgi_server}/alerts/rules/?team=shop")
    row = page.locator("#rule-memory_high")
    row.get_by_label("Memory near the limit threshold %").fill("75")
    row.get_by_role("button", name="Save").click()
    expect(page.locator(".messages")).to_contain_text("Saved: Memory near the limit for shop.")
    expect(page.locator("#rule-memory_high")).to_contain_text("shop's own")
    assert Rule.objects.get(team=team, kind=Kind.MEMORY_HIGH).threshold_pct == 75

    # An alert on the team's app: the badge lights up by itself.
    page.locator("header nav").get_by_role("link", name="Alerts").click()
    services.fire(
        Kind.OOM_KILL,
        services.Subject.of_instance(Kind.OOM_KILL, instance),
        "slw-cart-0 died: exit code 137 (OOM killed)",
        "eating memory",
    )
    expect(page.locator("#alerts-badge")).to_have_text("1", timeout=15_000)
    expect(page.locator("#firing")).to_contain_text("slw-cart-0 died: exit code 137 (OOM killed)")
    screenshot("alerts")
    page.locator("#firing").get_by_role("link", name="slw-cart-0 died: exit code 137 (OOM killed)").click()
    expect(page.get_by_role("heading", name="OOM kill: slw-cart-0")).to_be_visible()
    expect(page.locator("pre")).to_contain_text("eating memory")
    expect(page.locator("table")).to_contain_text("load balancer")  # its delivery, waiting for a worker
    expect(page.locator("#alerts-badge")).to_have_text("")  # read by opening it
