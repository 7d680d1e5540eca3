from __future__ import annotations

import re
import shutil

from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from apps.fleet.models import Preparation
from apps.hosts import gateway
from apps.hosts.models import Host
from apps.lab import netns
from tests.browser.conftest import Fleet, login, open_host
from tests.helpers import plain_dockerd


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


def test_ops_prepare_a_host_and_watch_its_checklist_turn_green(
    page: Page,
    live_server,  # type: ignore[no-untyped-def]
    lab_fleet: Fleet,
    worker: None,
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    """From the host page, through a real worker: the agent taken away and IP forwarding on, as
    on a server the portal has not touched; Prepare puts both right while ops watch."""
    lab_host, host = lab_fleet.lab[0], lab_fleet.hosts[0]
    for path in lab_host.agent_dir.iterdir():
        path.unlink() if path.is_symlink() else shutil.rmtree(path)
    gateway.forget(host)
    netns.sh("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", netns=lab_host.netns)
    try:
        login(page, live_server.url, "ops")
        open_host(page, host.name)
        page.get_by_role("button", name="Probe now").click()
        # The probe installs the agent first; the doctor then finds forwarding on, with its remedy.
        check = page.locator('#checks tr[data-check="ip_forward off"]')
        expect(check).to_contain_text("net.ipv4.ip_forward=1")
        expect(check).to_contain_text("Remedy: sysctl -w net.ipv4.ip_forward=0")
        expect(page.locator("#host-state")).to_contain_text("fail")

        # The lab prepared it once when it registered it: this is the second time.
        page.locator("#prepare").get_by_role("button", name="Prepare again").click()
        card = page.locator("#prepare")
        # This run (not the lab's, which found nothing to fix) turns forwarding off, and ends Ready.
        expect(card.locator('li[data-step="fix network settings"]')).to_contain_text(
            "net.ipv4.ip_forward=0", timeout=60_000
        )
        expect(card.locator("#prepare-state")).to_have_text("Ready")
        expect(card.locator('li[data-step-state="failed"]')).to_have_count(0)
        assert Preparation.objects.filter(host=host).count() == 2
        # The checks and the log beside it followed, without a reload.
        expect(check).to_contain_text("net.ipv4.ip_forward=0")
        expect(page.locator("#host-state h3")).to_contain_text("pass")
        expect(page.locator("#host-log")).to_contain_text("fix-network net.ipv4.ip_forward=0")
        expect(page.locator("#host-state")).to_contain_text(
            f"hostagent {gateway.AGENT_VERSION} in {host.agent_path}"
        )
        screenshot("prepared")
        expect(page.get_by_role("button", name="Prepare again")).to_be_visible()
    finally:
        netns.sh("sysctl", "-q", "-w", "net.ipv4.ip_forward=0", netns=lab_host.netns)


def test_ops_apply_dockerd_settings_after_confirming_the_restart(
    page: Page,
    live_server,  # type: ignore[no-untyped-def]
    lab_fleet: Fleet,
    worker: None,
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    """dockerd without settings (a fresh install): the two advice rows offer Apply, which asks
    before restarting dockerd; once confirmed, Prepare writes, reloads and restarts, and both
    rows turn green with no reload of the page."""
    host = lab_fleet.hosts[1]
    with plain_dockerd(lab_fleet.lab[1]) as lab_host:
        login(page, live_server.url, "ops")
        open_host(page, host.name)
        page.get_by_role("button", name="Probe now").click()
        rotation = page.locator('#checks tr[data-check="log rotation"]')
        live = page.locator('#checks tr[data-check="live-restore"]')
        expect(live).to_contain_text("off: restarting dockerd stops every instance")
        expect(rotation).to_contain_text("never rotated")
        card = page.locator("#prepare")
        apply = card.get_by_role("button", name="Apply dockerd settings")
        # Dismissed: nothing starts.
        runs = Preparation.objects.filter(host=host).count()
        page.once("dialog", lambda dialog: dialog.dismiss())
        apply.click()
        expect(card.get_by_role("button", name="Prepare again")).to_be_visible()
        assert Preparation.objects.filter(host=host).count() == runs
        assert lab_host.docker_config.read_text().strip() == "{}"

        page.once("dialog", lambda dialog: dialog.accept())
        live.get_by_role("button", name="Apply").click()
        expect(card.locator('li[data-step="dockerd settings"]')).to_contain_text(
            "dockerd reloaded and restarted", timeout=60_000
        )
        expect(card.locator("#prepare-state")).to_have_text("Ready")
        expect(live).to_contain_text("on: restarting dockerd leaves instances running")
        expect(rotation).to_contain_text("max-size 10m")
        expect(card.get_by_role("button", name="Apply dockerd settings")).to_have_count(0)
        expect(page.locator("#host-log")).to_contain_text("dockerd settings")
        assert '"live-restore": true' in lab_host.docker_config.read_text()
        screenshot("dockerd-settings")
