"""Ops drain a lab host from its page in Chromium and watch the instances move off it, live,
through a real Celery worker."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from apps.applications import services
from apps.fleet.models import Drain
from apps.instances import executor
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from tests.browser.conftest import Fleet, login, open_host


def test_ops_drain_a_host_and_watch_its_instances_move(
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
    leaving, staying = live_lab_hosts
    slugs = ["draina", "drainb", "drainc"]
    try:
        for slug in slugs:
            app = services.app_create(
                user=dev, team=team, slug=slug, base_image=image, memory_mb=32, cpus="0.1"
            )
            # drainc has an instance on each host: the drain stacks it on the one that stays.
            on = [leaving, staying] if slug == "drainc" else [leaving]
            op = services.app_scale(user=dev, app=app, instances=len(on), hosts=on)
            executor.run_operation(op.pk)
            assert Operation.objects.get(pk=op.pk).status == Operation.Status.SUCCEEDED

        login(page, live_server.url, "ops")
        open_host(page, leaving.name)
        # Ops see what runs on the host, and whose it is.
        listed = page.locator("#host-instances")
        expect(listed).to_contain_text("3 instances of 3 apps, reserving 96 MiB and 0.3 CPU")
        expect(listed.locator("tr[data-instance=slw-draina-0]")).to_contain_text("draina")
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name=f"Drain {leaving.name}").click()
        expect(page.locator("#drain-summary")).to_contain_text(re.compile(r"(Draining|Empty): \d of 3 moved"))
        screenshot("draining")
        # The card polls itself until the drain is over.
        expect(page.locator("#drain")).to_contain_text("Empty: 3 of 3 moved", timeout=90_000)
        expect(page.locator("#drain")).to_contain_text(f"→ {staying.name}")
        expect(page.locator("#drain")).to_contain_text("Take instances again")
        # Its end state, without a reload: the badge says it is empty, nothing is left to drain,
        # and no notice from the start lingers.
        expect(page.locator("#host-badge")).to_have_text("Drained, empty")
        expect(page.get_by_role("button", name=re.compile("Drain what is left"))).to_have_count(0)
        expect(page.locator(".messages")).to_have_count(0)
        expect(listed).to_contain_text("No instances.")
        screenshot("drained")
        assert Drain.objects.get(host=leaving).state == Drain.State.DONE
        assert set(Instance.objects.filter(app__slug__in=slugs).values_list("host_id", "state")) == {
            (staying.pk, Instance.State.RUNNING)
        }

        page.get_by_role("button", name="Take instances again").click()
        expect(page.locator("#host-state")).to_contain_text(re.compile("Active"))
        # Taking the host back moves nothing: ops are told that an app lost its spread...
        expect(page.locator(".messages")).to_contain_text("1 app(s) have every instance on one host")
        page.get_by_role("link", name="← Hosts").click()
        card = page.locator("#spread")
        expect(card.locator("tr[data-stacked=drainc]")).to_contain_text(staying.name)
        screenshot("stacked")
        # ...and spread it with one click; the card follows the move to its end.
        card.get_by_role("button", name=f"Move one to {leaving.name}").click()
        expect(card).to_contain_text(
            "Every app with two or more instances runs on two or more hosts.", timeout=60_000
        )
        expect(card.locator("tr[data-stacked]")).to_have_count(0)
        assert set(Instance.objects.filter(app__slug="drainc").values_list("host_id", flat=True)) == {
            leaving.pk,
            staying.pk,
        }
    finally:
        for lab_host in lab:
            for slug in slugs:
                ids = fleet.docker(
                    lab_host, "ps", "-aq", "--filter", f"label=io.slipway.app={slug}"
                ).stdout.split()
                if ids:
                    fleet.docker(lab_host, "rm", "-f", *ids, check=False)
