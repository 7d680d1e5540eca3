"""A developer runs a command on an instance's page in Chromium and reads its output and exit
code; a lead defines a one-click command that the developer then runs from the app page."""

from __future__ import annotations

import re

from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from apps.accounts.models import Membership, Team
from apps.applications import services
from apps.applications.models import App
from apps.hosts.models import Host
from apps.instances import executor
from apps.instances.models import Operation
from apps.lab import fleet
from apps.lab.register import register_images
from tests.browser.conftest import login, open_app


def test_a_command_runs_on_the_instance_page_and_a_named_one_from_the_app_page(
    page: Page,
    asgi_server: str,
    live_lab_hosts: list[Host],
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    (image,) = register_images(("busybox",), log=lambda _: None)
    team = Team.objects.create(slug="ops-team", name="Ops team")
    dev = User.objects.create_user("dev", "dev@example.invalid", "pw-dev")
    boss = User.objects.create_user("boss", "boss@example.invalid", "pw-boss")
    Membership.objects.create(team=team, user=dev, role=Membership.Role.DEVELOPER)
    Membership.objects.create(team=team, user=boss, role=Membership.Role.LEAD)
    app = services.app_create(user=dev, team=team, slug="runner", base_image=image, memory_mb=32, instances=1)
    try:
        executor.run_operation(Operation.objects.get(app=app).pk)

        login(page, asgi_server, "dev")
        open_app(page, "runner")
        page.get_by_role("link", name="slw-runner-0").click()
        expect(page.get_by_role("heading", name="slw-runner-0")).to_be_visible()
        page.fill("#exec-argv", "sh\n-c\necho $((6*7)) from $(hostname); exit 4")
        page.get_by_role("button", name="Run").click()
        output = page.locator("[data-exec-output]")
        expect(output).to_have_attribute("data-state", "done")
        expect(output).to_contain_text(re.compile(r"^42 from \S+"))
        expect(page.locator("[data-exec-status]")).to_contain_text("Exit code 4")
        # A command typed on one line, as in a terminal, is split into its arguments.
        page.fill("#exec-argv", "head -n 1 /proc/meminfo")
        page.get_by_role("button", name="Run").click()
        expect(output).to_have_attribute("data-state", "done")
        expect(output).to_contain_text(re.compile(r"^MemTotal:"))
        # The command just run is listed at once under "Recent commands here".
        expect(page.locator("#recent-commands")).to_contain_text("head -n 1 /proc/meminfo")
        # Shell syntax with no shell is refused with how to get one.
        page.fill("#exec-argv", "cat /proc/meminfo | head")
        page.get_by_role("button", name="Run").click()
        expect(output).to_have_attribute("data-state", "refused")
        expect(output).to_contain_text("No shell runs the command")
        # A refusal says what is wrong.
        page.fill("#exec-argv", "")
        page.get_by_role("button", name="Run").click()
        expect(output).to_have_attribute("data-state", "refused")
        expect(output).to_contain_text("Give a command to run.")
        screenshot("instance-exec")

        page.context.clear_cookies()
        login(page, asgi_server, "boss")
        open_app(page, "runner")
        page.get_by_role("link", name="slw-runner-0").click()
        commands = page.locator("#commands")
        commands.locator("input[name=name]").fill("greet")
        commands.locator("textarea[name=argv]").fill("echo\nhello from a named command")
        commands.get_by_role("button", name="Save").click()
        expect(page.locator(".messages")).to_contain_text("Command saved.")

        page.context.clear_cookies()
        login(page, asgi_server, "dev")
        open_app(page, "runner")
        page.locator("#app-commands").get_by_role("button", name="greet").click()
        expect(page.locator("#app-commands [data-exec-output]")).to_contain_text("hello from a named command")
        screenshot("app-commands")
        page.get_by_role("link", name="Commands run in runner").click()
        expect(page.locator("table")).to_contain_text("greet")
        expect(page.locator("table")).to_contain_text("echo $((6*7))")
    finally:
        for lab_host in fleet.LabConfig.from_settings().all_hosts():
            fleet.docker(lab_host, "rm", "-f", "slw-runner-0", check=False)
        App.objects.filter(pk=app.pk).delete()
