"""A developer finds out why an instance died, in Chromium: the OOM kill arrives on the open
instance page's timeline without a reload, with the lines the app printed before it; the
logs panel shows the previous container's lines; the app's charts mark the death and draw the
throttled CPU."""

from __future__ import annotations

import re

from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from apps.accounts.models import Membership, Team
from apps.applications import services
from apps.hosts.models import Host
from apps.instances import executor
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from apps.lab.register import register_images
from tests.browser.conftest import login, open_app
from tests.helpers import EATER, EventWatcher, app_prints


def test_a_developer_sees_why_an_instance_died_without_reloading(
    page: Page,
    asgi_server: str,
    live_lab_hosts: list[Host],
    watcher: EventWatcher,
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    (image,) = register_images(("busybox",), log=lambda _: None)
    team = Team.objects.create(slug="oom-team", name="OOM team")
    dev = User.objects.create_user("dev", "dev@example.invalid", "pw-dev")
    Membership.objects.create(team=team, user=dev, role=Membership.Role.DEVELOPER)
    app = services.app_create(
        user=dev,
        team=team,
        slug="hungry",
        base_image=image,
        command=["sh", "-c", EATER],
        memory_mb=32,
        instances=1,
        health_check="none",
    )
    lab = fleet.LabConfig.from_settings().all_hosts()
    try:
        executor.run_operation(Operation.objects.get(app=app).pk)
        instance = Instance.objects.select_related("host").get(app=app)
        lab_host = next(h for h in lab if h.name == instance.host.name)

        login(page, asgi_server, "dev")
        open_app(page, "hungry")
        page.get_by_role("link", name="slw-hungry-0").click()
        timeline = page.locator("#timeline")
        # The app's first scale and its container's start are there already.
        expect(timeline.locator(".timeline-entry.kind-scale")).to_contain_text("by dev")
        expect(timeline.locator(".timeline-entry.kind-started")).to_contain_text("slw-hungry-0 started")

        app_prints(lab, instance, "echo the last request")
        fleet.docker(lab_host, "exec", instance.container_name, "touch", "/srv/data/eat")

        # Arrives by itself (the page polls the events API), newest first.
        died = timeline.locator(".timeline-entry.kind-died").first
        expect(died).to_contain_text("slw-hungry-0 died: exit code 137 (OOM killed)", timeout=20_000)
        expect(timeline.locator(".timeline-entry.kind-restarted").first).to_contain_text(
            "after exit code 137", timeout=20_000
        )
        expect(timeline.locator(".timeline-entry.kind-oom").first).to_contain_text(
            "slw-hungry-0 ran out of memory"
        )
        died.locator("summary").click()
        expect(died.locator(".log-output")).to_contain_text("the last request")
        expect(died.locator(".log-output")).to_contain_text("eating memory")
        screenshot("instance-oom-timeline")

        # Only the deaths, then everything again.
        timeline.get_by_label("Show").select_option("deaths")
        expect(timeline.locator(".timeline-entry.kind-deploy")).to_have_count(0)
        expect(timeline.locator(".timeline-entry.kind-died")).to_have_count(1)

        # The logs panel: the previous container's lines, as the portal kept them.
        page.reload()
        page.get_by_label("Previous container").check()
        panel = page.locator("#logs-lines")
        expect(panel).to_contain_text("Previous container")
        expect(panel).to_contain_text("eating memory")

        # The app's charts: the death is a marker, and throttling has its chart.
        open_app(page, "hungry")
        page.get_by_role("tab", name="Metrics").click()
        expect(page.locator("[data-chart=throttle] canvas")).to_be_visible()
        expect(page.locator("[data-markers]")).to_contain_text(re.compile(r"OOM killed|died"))
    finally:
        for lab_host in lab:
            ids = fleet.docker(
                lab_host, "ps", "-aq", "--filter", "label=io.slipway.app=hungry"
            ).stdout.split()
            if ids:
                fleet.docker(lab_host, "rm", "-f", *ids, check=False)
