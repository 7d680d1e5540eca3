"""Base image versions in Chromium, through a real Celery worker on the lab fleet: ops publish v2
of slipway/busybox from the Base images page and watch it load onto the hosts; the owner of an
app on v1 is told of it on the app page and rolls the app onto it, instance by instance, live."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from apps.applications import services
from apps.applications.models import BaseImage, BuildState
from apps.instances import executor
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from tests.browser.conftest import Fleet, login, open_app

RECIPE = """FROM scratch
ADD busybox /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV SLIPWAY_IMAGE_VERSION=2
CMD ["/bin/sh"]
"""


def test_ops_publish_a_version_and_the_owner_rolls_the_app_onto_it(
    page: Page,
    live_server,  # type: ignore[no-untyped-def]
    lab_fleet: Fleet,
    worker: None,
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    lab, image, team, dev = lab_fleet.lab, lab_fleet.image, lab_fleet.team, lab_fleet.dev
    reference = f"{image.name}:2"
    for lab_host in lab:
        fleet.docker(lab_host, "rmi", "-f", reference, check=False)
    try:
        app = services.app_create(
            user=dev, team=team, slug="upweb", base_image=image, memory_mb=32, cpus="0.1"
        )
        op = services.app_scale(user=dev, app=app, instances=2)
        executor.run_operation(op.pk)
        assert Operation.objects.get(pk=op.pk).status == Operation.Status.SUCCEEDED

        login(page, live_server.url, "ops")
        page.get_by_role("link", name="Base images").click()
        # Ops make v2 from v1: its recipe comes filled in, to edit.
        page.locator('tr[data-version="slipway/busybox:1"]').get_by_role("link", name="New version").click()
        form = page.locator("#version-form")
        expect(form.locator("#id_tag")).to_have_value("2")
        expect(form.locator("#id_recipe")).to_have_value(image.recipe)
        # A recipe the portal cannot build is refused with its reason, and nothing is made.
        form.locator("#id_recipe").fill("FROM debian\n")
        form.get_by_role("button", name="Make draft").click()
        expect(form.locator(".field-error").first).to_contain_text("FROM debian is not supported")
        assert not BaseImage.objects.filter(name=image.name, tag="2").exists()
        form.locator("#id_recipe").fill(RECIPE)
        form.get_by_role("button", name="Make draft").click()
        expect(page.locator(".messages")).to_contain_text("slipway/busybox:2 is a draft")
        row = page.locator('tr[data-version="slipway/busybox:2"]')
        expect(row).to_contain_text("draft")
        v2 = BaseImage.objects.get(name=image.name, tag="2")
        assert v2.state == BuildState.DRAFT and v2.default_command == image.default_command
        row.get_by_role("button", name="Publish").click()
        expect(page.locator("#images-notice")).to_contain_text("Building slipway/busybox:2")
        # The page follows the build and the loads onto both hosts until it is published.
        expect(page.locator('tr[data-version="slipway/busybox:2"]')).to_contain_text(
            "published", timeout=120_000
        )
        for lab_host in lab:
            expect(
                page.locator(f'tr[data-version="slipway/busybox:2"] li[data-host="{lab_host.name}"]')
            ).to_contain_text("loaded")
        screenshot("published")
        page.locator('tr[data-version="slipway/busybox:2"]').get_by_role("button", name="Recommend").click()
        expect(page.locator('tr[data-version="slipway/busybox:2"]')).to_contain_text("recommended")
        expect(page.locator('tr[data-version="slipway/busybox:1"]')).not_to_contain_text("recommended")

        page.context.clear_cookies()
        login(page, live_server.url, "dev")
        open_app(page, "upweb")
        expect(page.locator("#newer-image")).to_contain_text("slipway/busybox:2")
        page.get_by_role("button", name="Roll instances").click()
        panel = page.locator("#live .roll")
        # A release that changes only the base image version, deployed instance by instance.
        expect(panel).to_contain_text("Deploy of release 2 (from 1)")
        # Each instance goes through its steps, shown as they happen, until both are done.
        expect(panel.locator('[data-roll-state="done"]')).to_have_count(2, timeout=90_000)
        expect(panel).to_contain_text("passed its health check")
        expect(page.locator("#instances td.version")).to_have_text(["release 2 · 2", "release 2 · 2"])
        # The pinned version above follows without a reload, and nothing newer is offered.
        expect(page.locator("#base-image")).to_contain_text("slipway/busybox:2")
        expect(page.locator("#newer-image")).to_have_count(0)
        screenshot("rolled")
        assert set(Instance.objects.filter(app__slug="upweb").values_list("image__tag", flat=True)) == {"2"}
    finally:
        for lab_host in lab:
            ids = fleet.docker(lab_host, "ps", "-aq", "--filter", "label=io.slipway.app=upweb").stdout.split()
            if ids:
                fleet.docker(lab_host, "rm", "-f", *ids, check=False)
            fleet.docker(lab_host, "rmi", "-f", reference, check=False)
