"""Ops plan the consolidation of the lab in Chromium: two half-empty hosts, one would do; the
picture and the moves are on the page, and Apply drains the emptied host through a real
worker until its page says it is empty. A what-if fleet renders with no Apply."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from apps.applications import services
from apps.fleet import consolidation
from apps.fleet.models import Drain
from apps.hosts.models import Host
from apps.instances import executor
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from tests.browser.conftest import Fleet, login


def test_ops_plan_the_lab_and_apply_it(
    page: Page,
    live_server,  # type: ignore[no-untyped-def]
    lab_fleet: Fleet,
    worker: None,
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    lab, live_lab_hosts, image, team, dev = (
        lab_fleet.lab,
        lab_fleet.hosts,
        lab_fleet.image,
        lab_fleet.team,
        lab_fleet.dev,
    )
    scenario = consolidation.scenario_save(name="what-if", apps=50, instances=200, hosts=10, seed=1)
    slugs = ["planone", "plantwo"]
    try:
        for slug, host in zip(slugs, live_lab_hosts, strict=True):
            app = services.app_create(
                user=dev, team=team, slug=slug, base_image=image, memory_mb=32, cpus="0.1"
            )
            op = services.app_scale(user=dev, app=app, instances=1, hosts=[host])
            executor.run_operation(op.pk)
            assert Operation.objects.get(pk=op.pk).status == Operation.Status.SUCCEEDED

        login(page, live_server.url, "ops")
        page.get_by_role("link", name="Hosts").first.click()
        page.get_by_role("link", name="Consolidation planner").click()
        expect(page.locator("#hosts-before-after")).to_have_text("2 → 1")
        expect(page.get_by_role("img")).to_be_visible()
        expect(page.locator("body")).to_contain_text("slw-plan")  # the move names the container
        screenshot("live")

        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("#apply").click()
        expect(page.locator(".messages")).to_contain_text("drain", ignore_case=True)
        drained = Drain.objects.get()
        expect(page.locator(".messages")).to_contain_text(drained.host.name)
        page.get_by_role("link", name=drained.host.name).first.click()
        expect(page.locator("#drain")).to_contain_text("Empty: 1 of 1 moved", timeout=90_000)
        screenshot("drained")
        kept = Host.objects.exclude(pk=drained.host_id).get()
        assert set(Instance.objects.filter(app__slug__in=slugs).values_list("host_id", "state")) == {
            (kept.pk, Instance.State.RUNNING)
        }

        page.goto(f"{live_server.url}/hosts/planner/?scenario={scenario.pk}")
        expect(page.locator("#summary")).to_contain_text("What-if only")
        expect(page.locator("#apply")).to_have_count(0)
        screenshot("scenario")
    finally:
        for lab_host in lab:
            for slug in slugs:
                ids = fleet.docker(
                    lab_host, "ps", "-aq", "--filter", f"label=io.slipway.app={slug}"
                ).stdout.split()
                if ids:
                    fleet.docker(lab_host, "rm", "-f", *ids, check=False)
