"""A developer reads an instance's logs in Chromium: the last lines with stderr marked, a filter,
timestamps, and a download of everything Docker has for the container."""

from __future__ import annotations

import re
from pathlib import Path

from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from apps.accounts.models import Membership, Team
from apps.applications import services
from apps.applications.models import App
from apps.hosts.models import Host
from apps.instances import executor
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from apps.lab.register import register_images
from tests.browser.conftest import login, open_app
from tests.helpers import app_prints


def test_a_developer_reads_filters_and_downloads_an_instance_log(
    page: Page,
    asgi_server: str,
    live_lab_hosts: list[Host],
    tmp_path: Path,
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    (image,) = register_images(("busybox",), log=lambda _: None)
    team = Team.objects.create(slug="log-team", name="Log team")
    dev = User.objects.create_user("dev", "dev@example.invalid", "pw-dev")
    Membership.objects.create(team=team, user=dev, role=Membership.Role.DEVELOPER)
    app = services.app_create(user=dev, team=team, slug="logger", base_image=image, memory_mb=32, instances=1)
    try:
        executor.run_operation(Operation.objects.get(app=app).pk)
        instance = Instance.objects.select_related("host").get(app=app)
        lab = fleet.LabConfig.from_settings().all_hosts()
        app_prints(
            lab, instance, "for i in $(seq 1 30); do echo request $i served; done; echo disk almost full >&2"
        )

        login(page, asgi_server, "dev")
        open_app(page, "logger")
        page.get_by_role("link", name="slw-logger-0").click()
        panel = page.locator("#logs-lines")
        expect(panel).to_contain_text("request 30 served")
        expect(panel.locator(".log-stderr")).to_have_text(re.compile(r"err\s+disk almost full"))
        expect(panel).to_contain_text("31 lines")
        # It opens at the newest line.
        output = panel.locator(".log-output")
        assert output.evaluate("e => e.scrollHeight > e.clientHeight")  # 31 lines overflow it
        page.wait_for_function(
            "() => { const e = document.querySelector('#logs-lines .log-output');"
            " return e.scrollTop > 0 && e.scrollTop + e.clientHeight >= e.scrollHeight - 2; }"
        )

        page.fill("#logs-filter", "request 2")
        expect(panel).to_contain_text("11 of 31 lines contain “request 2”")
        expect(panel).not_to_contain_text("disk almost full")

        page.fill("#logs-filter", "")
        page.get_by_label("Timestamps").check()
        expect(panel.locator("time").first).to_have_text(re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"))
        screenshot("instance-logs")

        # Following: a line the app writes now appears without asking; paused, new lines are
        # held and counted, and come on resume.
        def write(text: str) -> None:
            app_prints(lab, instance, f"echo {text}")

        page.get_by_role("button", name="Follow").click()
        expect(page.locator("#logs-follow-status")).to_contain_text("Following")
        expect(panel).to_contain_text("request 30 served")
        write("written while followed")
        expect(panel).to_contain_text("written while followed")
        page.get_by_role("button", name="Pause").click()
        write("written while paused")
        expect(page.locator("#logs-follow-status")).to_contain_text("Paused: 1 new line(s) held.")
        expect(panel).not_to_contain_text("written while paused")
        page.get_by_role("button", name="Resume").click()
        expect(panel).to_contain_text("written while paused")
        page.get_by_role("button", name="Stop following").click()
        expect(page.locator("#logs-follow-status")).to_have_text("Stopped following.")

        with page.expect_download() as caught:
            page.locator("#logs-download").click()
        download = caught.value
        assert download.suggested_filename == "slw-logger-0.log"
        saved = tmp_path / "saved.log"
        download.save_as(saved)
        lines = saved.read_text().splitlines()
        assert len(lines) == 33 and sum(line.endswith(" disk almost full") for line in lines) == 1
        assert lines[-1].endswith(" written while paused")

        # The app page's Logs tab: its instances merged, each line marked, and followed.
        open_app(page, "logger")
        page.get_by_role("tab", name="Logs").click()
        app_panel = page.locator("#logs-lines")
        expect(app_panel.locator(".log-line").last).to_contain_text("slw-logger-0 written while paused")
        page.get_by_role("button", name="Follow").click()
        expect(page.locator("#logs-follow-status")).to_contain_text("Following")
        write("written for the app page")
        expect(app_panel.locator(".log-line").last).to_have_text(
            re.compile(r"^slw-logger-0 written for the app page\s*$")
        )
        screenshot("app-logs")
    finally:
        for lab_host in fleet.LabConfig.from_settings().all_hosts():
            fleet.docker(lab_host, "rm", "-f", "slw-logger-0", check=False)
        App.objects.filter(pk=app.pk).delete()
