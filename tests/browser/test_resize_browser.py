"""A live resize in Chromium: a developer asks for more memory for a running app, a lead sees the
badge and the request in the inbox and approves it with a comment (htmx), the worker's resize
runs on a lab host, and the developer finds the new limit on the app page and in its history."""

from __future__ import annotations

import re

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
from apps.resources.models import ResourceRequest
from tests.browser.conftest import login, open_app

MiB = 1024 * 1024


def test_a_lead_approves_a_resize_and_the_instance_gets_the_new_limit(
    page: Page,
    live_server,
    live_lab_hosts: list[Host],
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    (image,) = register_images(("busybox",), log=lambda _: None)
    team = Team.objects.create(slug="growth", name="Growth team")
    dev = User.objects.create_user("dev", "dev@example.invalid", "pw-dev")
    Membership.objects.create(team=team, user=dev, role=Membership.Role.DEVELOPER)
    boss = User.objects.create_user("boss", "boss@example.invalid", "pw-boss")
    Membership.objects.create(team=team, user=boss, role=Membership.Role.LEAD)
    app = services.app_create(
        user=dev, team=team, slug="resizable", base_image=image, memory_mb=64, cpus="0.25", instances=1
    )
    try:
        executor.run_operation(Operation.objects.get(app=app).pk)
        instance = Instance.objects.select_related("host").get(app=app)
        assert instance.state == Instance.State.RUNNING, instance.last_error

        # The developer asks for 128 MiB.
        login(page, live_server.url, "dev")
        open_app(page, app.slug)
        page.get_by_role("tab", name="Resources").click()
        card = page.locator("#resources")
        expect(card.locator("#resource-limits")).to_contain_text("64 MiB and 0.25 CPU per instance")
        expect(card.locator(f"tr[data-instance={instance.container_name}]")).to_contain_text("64 MiB")
        expect(page.locator("#nav-approvals")).to_have_count(0)  # developers decide nothing
        page.fill("#resize_memory_mb", "128")
        page.fill("#resize_reason", "The cache outgrew 64 MiB at peak.")
        screenshot("request-form")
        card.get_by_role("button", name="Request").click()
        expect(card.locator("#open-request")).to_contain_text("Waiting for a lead")
        expect(card.locator("#open-request")).to_contain_text("memory 64 → 128 MiB")
        expect(card.get_by_role("status")).to_contain_text("waits for a lead of team growth")
        screenshot("request-filed")

        # The lead, in a browser of their own, sees the badge, and the request in the inbox, and
        # approves it; the developer's page stays open meanwhile.
        developer_page = page
        browser = page.context.browser
        assert browser is not None
        page = browser.new_page()
        login(page, live_server.url, "boss")
        expect(page.locator("#nav-approvals .badge")).to_have_text("1")
        page.locator("#nav-approvals").click()
        request = ResourceRequest.objects.get(app=app)
        item = page.locator(f"#request-{request.pk}")
        expect(item).to_contain_text("resizable")
        expect(item).to_contain_text("The cache outgrew 64 MiB at peak.")
        expect(item).to_contain_text("memory 64 → 128 MiB, CPU 0.25 (unchanged)")
        expect(item).to_contain_text("yes, the hosts and the team's quota can take it")
        screenshot("inbox")
        item.get_by_label("Comment").fill("Fine for the sale week.")
        item.get_by_role("button", name="Approve").click()
        decided = page.locator(f"#request-{request.pk}")
        expect(decided).to_have_attribute("data-state", "approved")
        expect(decided).to_contain_text("Approved, applying")
        expect(decided).to_contain_text("by boss: “Fine for the sale week.”")
        # No longer a card waiting for a decision, and listed under "Decided lately", live.
        expect(page.locator("#inbox article")).to_have_count(0)
        row = page.locator(f"#decided tr[data-request='{request.pk}']")
        expect(row).to_contain_text("Approved, applying")
        expect(row).to_contain_text("Fine for the sale week.")
        expect(page.locator("#nav-approvals .badge")).to_have_count(0)  # the badge follows
        screenshot("approved")

        # The worker's part, run here: docker update, then the limit read back from the cgroup.
        op = Operation.objects.get(app=app, kind=Operation.Kind.RESIZE)
        executor.run_operation(op.pk)
        op.refresh_from_db()
        assert op.status == Operation.Status.SUCCEEDED, op.error
        lab_host = next(
            h for h in fleet.LabConfig.from_settings().all_hosts() if h.name == instance.host.name
        )
        inspected = fleet.docker(lab_host, "inspect", "-f", "{{.HostConfig.Memory}}", instance.container_name)
        assert int(inspected.stdout.strip()) == 128 * MiB

        # The developer's open page follows it to the end, without a reload.
        expect(card.locator("#resource-limits")).to_contain_text("128 MiB and 0.25 CPU per instance")
        expect(card.locator("#open-request")).to_have_count(0)
        expect(card.locator("#resize-form")).to_be_visible()
        page.close()
        page = developer_page

        # The developer finds it applied, with the decision in the history.
        open_app(page, app.slug)
        page.get_by_role("tab", name="Resources").click()
        expect(card.locator("#resource-limits")).to_contain_text("128 MiB and 0.25 CPU per instance")
        expect(card.locator(f"tr[data-instance={instance.container_name}]")).to_contain_text("128 MiB")
        history = card.locator(f"#resource-history tr[data-request='{request.pk}']")
        expect(history).to_contain_text("Applied")
        expect(history).to_contain_text(re.compile(r"boss\s+approved: Fine for the sale week\."))
        expect(history).to_contain_text("applied: 1 instance(s) at 128 MiB and 0.25 CPU")
        expect(card.locator("#resize-form")).to_be_visible()  # settled: a new request can be filed
        screenshot("applied")
    finally:
        for lab_host in fleet.LabConfig.from_settings().all_hosts():
            ids = fleet.docker(
                lab_host, "ps", "-aq", "--filter", f"label=io.slipway.app={app.slug}"
            ).stdout.split()
            if ids:
                fleet.docker(lab_host, "rm", "-f", *ids, check=False)
        App.objects.filter(pk=app.pk).delete()
