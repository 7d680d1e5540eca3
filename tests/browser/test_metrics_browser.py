"""Charts in Chromium: the app page draws its instances' CPU and memory from real sweeps of a
lab container, switches ranges, and the host page draws used against reserved."""

from __future__ import annotations

import itertools
import math
import re
import time

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
from apps.metrics import services as metrics
from tests.browser.conftest import login, open_app, open_host


def test_the_app_page_charts_real_samples_and_the_host_page_its_load(
    page: Page,
    live_server,
    live_lab_hosts: list[Host],
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    (image,) = register_images(("busybox",), log=lambda _: None)
    team = Team.objects.create(slug="charts", name="Charts team")
    dev = User.objects.create_user("dev", "dev@example.invalid", "pw-dev")
    Membership.objects.create(team=team, user=dev, role=Membership.Role.DEVELOPER)
    User.objects.create_user("ops", "ops@example.invalid", "pw-ops", is_staff=True, is_superuser=True)
    app = services.app_create(
        user=dev, team=team, slug="plotted", base_image=image, memory_mb=32, cpus="0.2", instances=1
    )
    try:
        executor.run_operation(Operation.objects.get(app=app).pk)
        instance = Instance.objects.select_related("host").get(app=app)
        lab_host = next(
            h for h in fleet.LabConfig.from_settings().all_hosts() if h.name == instance.host.name
        )
        metrics.collect_all()
        fleet.docker(
            lab_host,
            "exec",
            instance.container_name,
            "sh",
            "-c",
            "i=0; while [ $i -lt 60000 ]; do i=$((i+1)); done",
        )
        time.sleep(1)
        metrics.collect_all()

        login(page, live_server.url, "dev")
        open_app(page, app.slug)
        cpu = page.locator("[data-chart=cpu]")
        expect(cpu).to_be_hidden()  # another tab; its charts load when it is shown
        expect(page.locator(".metrics")).not_to_have_attribute("data-loaded", "1h")
        page.get_by_role("tab", name="Metrics").click()
        expect(cpu.locator("canvas")).to_be_visible()
        expect(cpu).to_have_attribute("data-drawn", re.compile(r"^[1-9]\d*$"))
        expect(page.locator("[data-chart=memory]")).to_have_attribute("data-drawn", re.compile(r"^[1-9]\d*$"))
        expect(page.locator("[data-status]")).to_contain_text("step 10 s (raw)")
        expect(page.locator("[data-markers]")).to_contain_text("Scale")
        # Moments as every page writes them, in the portal's zone; no browser-locale dates.
        stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
        expect(page.locator("[data-markers] li").first).to_contain_text(stamp)
        expect(page.locator("[data-status]")).to_contain_text(stamp)
        # The value axes read as steps people use: no label twice, an even step in one unit.
        for kind in ("cpu", "memory", "network", "blkio"):
            ticks = page.locator(f"[data-chart={kind}]").get_attribute("data-yticks") or ""
            labels = ticks.split("|")
            assert len(labels) >= 2 and len(set(labels)) == len(labels), (kind, labels)
            numbers = [float(re.sub(r"[^\d.]", "", label)) for label in labels]
            units = {re.sub(r"[\d.\s]", "", label) for label in labels}
            steps = {round(b - a, 6) for a, b in itertools.pairwise(numbers)}
            assert len(units) == 1 and len(steps) == 1, (kind, labels)
            step = steps.pop()
            if kind != "cpu":  # sizes step by a power of two of their unit
                assert step == 2 ** round(math.log2(step)), (kind, labels)
        screenshot("app-charts-1h")

        page.get_by_role("button", name="24 h").click()
        expect(page.locator("[data-status]")).to_contain_text("step 60 s (1m)")
        expect(page.locator(".metrics")).to_have_attribute("data-loaded", "24h")

        page.context.clear_cookies()
        login(page, live_server.url, "ops")
        open_host(page, instance.host.name)
        expect(page.locator("#metrics [data-chart=cpu] canvas")).to_be_visible()
        expect(page.locator("#metrics [data-chart=cpu]")).to_have_attribute(
            "data-drawn", re.compile(r"^[1-9]\d*$")
        )
        expect(page.locator("#metrics")).to_contain_text("Last sweep")
        screenshot("host-charts")
    finally:
        for lab_host in fleet.LabConfig.from_settings().all_hosts():
            fleet.docker(lab_host, "rm", "-f", f"slw-{app.slug}-0", check=False)
        App.objects.filter(pk=app.pk).delete()
