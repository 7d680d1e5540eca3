from __future__ import annotations

import re

from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from apps.hosts.models import Host
from tests.browser.conftest import login


def test_ops_see_the_lab_hosts_and_probe_one_with_htmx(
    page: Page,
    live_server,
    live_lab_hosts: list[Host],
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    User.objects.create_user("ops", "ops@example.invalid", "pw-ops", is_staff=True)
    login(page, live_server.url, "ops")
    page.click("text=Hosts")
    rows = page.locator("table.grid tbody tr")
    expect(rows).to_have_count(len(live_lab_hosts))
    for host in live_lab_hosts:
        expect(page.locator("tr", has_text=host.name)).to_contain_text("Active")
    screenshot("host-list")

    host = live_lab_hosts[0]
    page.click(f"text={host.name}")
    expect(page.locator("#host-state")).to_contain_text("overlay2")
    before = page.locator("#host-state").inner_text()
    Host.objects.filter(pk=host.pk).update(cpus=None, facts={})
    page.reload()
    expect(page.locator("#host-state")).to_contain_text("unknown until the first probe")
    page.click("text=Probe now")
    # htmx swapped the fragment in place: the capacity is back without a page load.
    expect(page.locator("#host-state")).to_contain_text("CPUs")
    expect(page.locator("#host-state")).to_contain_text("overlay2")
    assert "Active" in before
    screenshot("host-detail")


def test_a_developer_cannot_open_the_host_pages(page: Page, live_server, transactional_db) -> None:  # type: ignore[no-untyped-def]
    User.objects.create_user("dev", "dev@example.invalid", "pw-dev")
    login(page, live_server.url, "dev")
    expect(page.locator("header nav")).not_to_contain_text("Hosts")
    page.goto(f"{live_server.url}/hosts/")  # typed by hand: there is no link to click
    expect(page).to_have_url(re.compile("/admin/login/"))
