"""Releases in Chromium, through a real Celery worker on the lab fleet: the owner uploads an
archive on the Releases tab and watches it roll instance by instance, without a reload (the
Overview's instances and current release follow); a bad archive is refused with its reason;
then the owner rolls back from the release list."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from playwright.sync_api import Page, expect

from apps.applications import releases, services
from apps.instances import executor
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from tests.browser.conftest import Fleet, login, open_app
from tests.helpers import archive


def _page_of(instance: Instance) -> bytes:
    with urllib.request.urlopen(f"http://{instance.address}:8080/index.html", timeout=2) as response:
        return bytes(response.read())


def test_the_owner_deploys_a_release_watches_it_roll_and_rolls_back_from_the_list(
    page: Page,
    live_server,  # type: ignore[no-untyped-def]
    lab_fleet: Fleet,
    worker: None,
    tmp_path: Path,
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    lab, image, team, dev = lab_fleet.lab, lab_fleet.image, lab_fleet.team, lab_fleet.dev
    try:
        app = services.app_create(
            user=dev,
            team=team,
            slug="relpage",
            base_image=image,
            memory_mb=32,
            cpus="0.1",
            health_check="http",
            health_path="/index.html",
            health_timeout=5,
        )
        first = archive({"index.html": b"first\n"})
        releases.release_create(user=dev, app=app, fileobj=first, size=len(first.getvalue()), note="first")
        op = services.app_scale(user=dev, app=app, instances=2)
        executor.run_operation(op.pk)
        assert Operation.objects.get(pk=op.pk).status == Operation.Status.SUCCEEDED

        login(page, live_server.url, "dev")
        open_app(page, "relpage")
        expect(page.locator("#current-release")).to_contain_text("release 2")
        page.get_by_role("tab", name="Releases").click()
        table = page.locator("#releases")
        expect(table.locator("tr[data-release]")).to_have_count(2)
        expect(table.locator('tr[data-release="2"]')).to_contain_text("current")

        # A file that is not an archive is refused with the reason, and nothing is made.
        bad = tmp_path / "notes.txt"
        bad.write_text("not an archive")
        form = page.locator("#release-form")
        form.locator("#id_file").set_input_files(str(bad))
        form.get_by_role("button", name="Deploy new release").click()
        expect(page.locator("#releases-live .error")).to_contain_text("Not a readable tar archive")
        expect(table.locator("tr[data-release]")).to_have_count(2)

        good = tmp_path / "second.tar.gz"
        good.write_bytes(archive({"index.html": b"second\n"}).getvalue())
        form.locator("#id_file").set_input_files(str(good))
        form.locator("#id_note").fill("the second page")
        form.get_by_role("button", name="Deploy new release").click()
        panel = page.locator("#releases-live .roll")
        expect(panel).to_contain_text("Deploy of release 3 (from 2)")
        # Each instance goes through its steps as they happen, until both are done.
        expect(panel.locator('[data-roll-state="done"]')).to_have_count(2, timeout=90_000)
        expect(panel).to_contain_text("passed its health check")
        expect(table.locator('tr[data-release="3"]')).to_contain_text("current")
        expect(table.locator('tr[data-release="3"]')).to_contain_text("the second page")
        expect(table.locator('tr[data-release="3"]')).to_contain_text("2 instances")
        screenshot("deployed")
        # The Overview followed without a reload.
        page.get_by_role("tab", name="Overview").click()
        expect(page.locator("#current-release")).to_contain_text("release 3")
        expect(page.locator("#instances td.version")).to_have_text(["release 3 · 1", "release 3 · 1"])
        assert {_page_of(i) for i in Instance.objects.filter(app=app)} == {b"second\n"}

        # Back to release 2 from the list: a new release that says which it restored.
        page.get_by_role("tab", name="Releases").click()
        page.once("dialog", lambda dialog: dialog.accept())
        table.locator('tr[data-release="2"]').get_by_role("button", name="Roll back to 2").click()
        expect(panel).to_contain_text("Deploy of release 4 (from 3)")
        expect(panel.locator('[data-roll-state="done"]')).to_have_count(2, timeout=90_000)
        restored = table.locator('tr[data-release="4"]')
        expect(restored).to_contain_text("current")
        expect(restored).to_contain_text("rollback to release 2")
        expect(restored).to_contain_text("of release 2")  # its files: release 2's, on the hosts
        screenshot("rolled-back")
        page.get_by_role("tab", name="Overview").click()
        expect(page.locator("#current-release")).to_contain_text("release 4")
        expect(page.locator("#current-release")).to_contain_text("restores release 2")
        assert {_page_of(i) for i in Instance.objects.filter(app=app)} == {b"first\n"}
    finally:
        for lab_host in lab:
            ids = fleet.docker(
                lab_host, "ps", "-aq", "--filter", "label=io.slipway.app=relpage"
            ).stdout.split()
            if ids:
                fleet.docker(lab_host, "rm", "-f", *ids, check=False)
