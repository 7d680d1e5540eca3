"""A developer opens a terminal in an instance in Chromium, types a command and sees its answer,
then exits the shell and sees the session end (the portal served by daphne, as in `make up`)."""

from __future__ import annotations

from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from apps.accounts.models import Membership, Team
from apps.applications import services
from apps.applications.models import BaseImage
from apps.console.models import ExecSession
from apps.hosts.models import Host
from apps.instances import executor
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from apps.lab.register import register_images
from tests.browser.conftest import login, open_app


def test_a_developer_types_into_the_terminal_and_sees_the_answer(
    page: Page,
    asgi_server: str,
    live_lab_hosts: list[Host],
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    [busybox] = register_images(("busybox",), log=lambda _: None)
    assert isinstance(busybox, BaseImage)
    team = Team.objects.create(slug="shop", name="Shop team")
    dev = User.objects.create_user("dev", "dev@example.invalid", "pw-dev")
    Membership.objects.create(team=team, user=dev, role=Membership.Role.DEVELOPER)
    app = services.app_create(
        user=dev, team=team, slug="termweb", base_image=busybox, memory_mb=32, cpus="0.1", instances=1
    )
    executor.run_operation(Operation.objects.get(app=app).pk)
    instance = Instance.objects.get(app=app)
    assert instance.state == Instance.State.RUNNING, instance.last_error
    try:
        login(page, asgi_server, "dev")
        open_app(page, app.slug)
        page.get_by_role("link", name=instance.container_name).click()
        page.get_by_role("link", name="Open a terminal").click()
        status = page.locator("[data-terminal-status]")
        expect(status).to_contain_text("Connected")
        rows = page.locator(".xterm-rows")
        expect(rows).to_contain_text("/ #")  # busybox sh's prompt

        page.locator(".xterm").click()
        page.keyboard.type("echo slipway-$((6*7))")
        page.keyboard.press("Enter")
        # The typed line shows `$((6*7))`; only the shell's answer says 42.
        expect(rows).to_contain_text("slipway-42")
        screenshot("answer")

        page.keyboard.type("exit")
        page.keyboard.press("Enter")
        expect(status).to_contain_text("Session ended: The shell exited with code 0.")
        expect(rows).to_contain_text("[Session ended: The shell exited with code 0.]")
        screenshot("ended")

        row = ExecSession.objects.get(kind=ExecSession.Kind.TERMINAL)
        assert (row.username, row.instance_name, row.exit_code) == ("dev", "slw-termweb-0", 0)
        assert row.ended_at is not None and row.bytes_out > 0
    finally:
        for lab_host in fleet.LabConfig.from_settings().all_hosts():
            ids = fleet.docker(
                lab_host, "ps", "-aq", "--filter", "label=io.slipway.app=termweb"
            ).stdout.split()
            if ids:
                fleet.docker(lab_host, "rm", "-f", *ids, check=False)
