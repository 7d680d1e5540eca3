"""A developer creates an app in Chromium, scales it, watches it come up (htmx polling fed by a
real Celery worker on the lab), removes an instance, and finds the activity log."""

from __future__ import annotations

from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from apps.accounts.models import Membership, Team
from apps.applications.models import App
from apps.hosts.models import Host
from apps.lab import fleet
from apps.lab.register import register_images
from tests.browser.conftest import login


def test_a_developer_creates_scales_and_watches_an_app_come_up(
    page: Page,
    live_server,
    live_lab_hosts: list[Host],
    worker,
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    register_images(("busybox",), log=lambda _: None)
    team = Team.objects.create(slug="shop", name="Shop team")
    dev = User.objects.create_user("dev", "dev@example.invalid", "pw-dev")
    Membership.objects.create(team=team, user=dev, role=Membership.Role.DEVELOPER)
    try:
        login(page, live_server.url, "dev")
        page.get_by_role("link", name="Apps").first.click()
        page.get_by_role("link", name="New app").click()
        # One team and one image to choose from: both chosen already.
        expect(page.locator("select[name=team]")).to_have_value(str(team.pk))
        expect(page.locator("select[name=base_image]")).not_to_have_value("")
        # Every problem in one round, each under its own field.
        page.fill("input[name=slug]", "9 Bad")
        page.select_option("select[name=team]", value="")
        page.get_by_role("button", name="Create app").click()
        expect(page.locator("p.field:has(#id_slug) .field-error")).to_contain_text(
            "lowercase letters, digits"
        )
        expect(page.locator("p.field:has(#id_team) .field-error")).to_have_text("This field is required.")
        expect(page.locator("p.field:has(#id_base_image) .field-error")).to_have_count(0)
        page.fill("input[name=slug]", "storefront")
        page.select_option("select[name=team]", label="Shop team")
        page.select_option("select[name=base_image]", label="slipway/busybox:1")
        page.fill("input[name=memory_mb]", "32")
        page.fill("input[name=cpus]", "0.1")
        page.fill("input[name=instances]", "1")
        page.fill("textarea[name=env]", "GREETING=hello")
        screenshot("create-form")
        page.get_by_role("button", name="Create app").click()

        expect(page.get_by_role("heading", name="storefront")).to_be_visible()
        live = page.locator("#live")
        expect(live).to_contain_text("1 of 1 running", timeout=30_000)
        expect(live).to_contain_text("settled")

        page.fill("#id_instances", "3")
        page.get_by_role("button", name="Scale", exact=True).click()
        expect(live).to_contain_text("working")  # the htmx response replaced the fragment at once
        expect(live).to_contain_text("3 of 3 running", timeout=30_000)
        expect(live).to_contain_text("settled")
        expect(page.locator("#instances tbody tr")).to_have_count(3)
        screenshot("three-running")
        # The Resources tab's figures followed the scale, without a reload.
        page.get_by_role("tab", name="Resources").click()
        expect(page.locator("#resource-limits")).to_be_visible()
        expect(page.locator("#resource-limits")).to_contain_text("3 instances")
        expect(page.locator("#resource-usage tbody tr")).to_have_count(3)
        expect(live).to_be_hidden()  # one panel at a time
        assert page.url.endswith("#resources")  # the tab is in the URL: a reload opens it again
        page.reload()
        expect(page.locator("#resource-limits")).to_be_visible()
        page.get_by_role("tab", name="Overview").click()
        expect(live).to_be_visible()
        hosts_used = {row.inner_text().split("\t")[1] for row in page.locator("#instances tbody tr").all()}
        assert len(hosts_used) == 2  # spread over both lab hosts

        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("tr[data-instance=slw-storefront-2]").get_by_role("button", name="Remove").click()
        expect(page.locator("#instances tbody tr")).to_have_count(2, timeout=30_000)
        expect(live).to_contain_text("2 of 2 running")

        # A refused scale says why, in place.
        page.fill("#id_instances", "999")
        page.get_by_role("button", name="Scale", exact=True).click()
        expect(page.locator("#live [role=alert]")).to_contain_text("At most 50 instances")

        page.get_by_role("link", name="all").click()
        expect(page.locator("table.activity")).to_contain_text("scale 0 → 1")
        expect(page.locator("table.activity")).to_contain_text("remove slw-storefront-2")
        screenshot("activity")

        # The portal-wide Activity page (every app of the user's teams), narrowed as one picks.
        page.locator("header nav").get_by_role("link", name="Activity").click()
        activity = page.locator("#activity-list")
        expect(activity).to_contain_text("remove slw-storefront-2")
        filters = page.locator("#activity-filters")
        filters.locator("select[name=status]").select_option("failed")
        expect(activity).to_contain_text("Nothing matches these filters.")
        assert "status=failed" in page.url  # the filtered list has its own link
        filters.locator("select[name=status]").select_option("")
        filters.locator("input[name=app]").fill("storefront")
        expect(activity.locator("tr[data-operation]")).to_have_count(3)  # scale, scale, remove
        activity.get_by_role("link", name="storefront").first.click()

        # Delete: an empty box is refused next to it, in place; the app's name deletes it.
        expect(page.get_by_role("heading", name="storefront", exact=True)).to_be_visible()
        page.get_by_role("tab", name="Settings").click()
        delete = page.locator("#delete-form")
        delete.get_by_role("button", name="Delete storefront").click()
        expect(page.locator("#delete-error")).to_have_text(
            "Type storefront in the box to confirm; nothing was deleted."
        )
        assert page.url.endswith("/apps/storefront/#settings")  # no reload to the top
        page.locator("#delete-form input[name=confirm]").fill("storefront")
        page.locator("#delete-form").get_by_role("button", name="Delete storefront").click()
        expect(page.locator(".messages")).to_contain_text("storefront is being deleted")
        # The list says so, and drops the app once the worker deleted it, without a reload.
        expect(page.locator("#app-table")).not_to_contain_text("storefront", timeout=30_000)
        expect(page.locator("#app-table")).not_to_contain_text("0 / 0 running")
    finally:
        for lab_host in fleet.LabConfig.from_settings().all_hosts():
            ids = fleet.docker(
                lab_host, "ps", "-aq", "--filter", "label=io.slipway.app=storefront"
            ).stdout.split()
            if ids:
                fleet.docker(lab_host, "rm", "-f", *ids, check=False)
        App.objects.filter(slug="storefront").delete()
