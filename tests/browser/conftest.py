"""Playwright driving Debian's Chromium (`playwright install` cannot download a browser here)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from playwright.sync_api import Browser, Page, expect, sync_playwright

from apps.accounts.models import Membership, Team
from apps.applications.models import BaseImage
from apps.hosts.models import Host
from apps.lab import fleet
from apps.lab.register import prepare_lab_hosts, register_hosts, register_images, register_pool
from tests.helpers import EventWatcher, serve_asgi

# Playwright's sync API runs an event loop in this thread; the ORM calls that the tests
# make between page actions are still synchronous and safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"


# Per module, not per session: Playwright's sync API keeps an event loop running in the main
# thread while it is open, and the asyncio tests (the terminal's websocket) need that thread free.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def screenshot(page: Page, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    def take(name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{request.node.name}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def live_lab_hosts(transactional_db: None) -> list[Host]:
    lab = fleet.up(fleet.LabConfig.from_settings(), log=lambda _: None)
    return register_hosts(lab, log=lambda _: None)


@pytest.fixture
def watcher(live_lab_hosts: list[Host]) -> Iterator[EventWatcher]:
    """`manage.py watch_events` on the test database, holding every lab host's events."""
    from tests.conftest import TEST_BROKER_URL, _database_url

    process = EventWatcher(_database_url(), TEST_BROKER_URL, live_lab_hosts)
    yield process
    process.stop()


@pytest.fixture
def asgi_server(transactional_db: None) -> Iterator[str]:
    """The portal under daphne (as `make up` serves it: websockets too, which pytest-django's
    WSGI live_server lacks), on a free port and the test database; yields its base URL."""
    from tests.conftest import TEST_BROKER_URL, _database_url

    with serve_asgi(_database_url(), TEST_BROKER_URL) as base:
        yield base


@dataclass
class Fleet:
    """The lab registered for a browser test: hosts, the tests' pool, busybox, a team with a
    developer ("dev") and an ops user ("ops"), passwords "pw-<name>"."""

    lab: list[fleet.LabHost]
    hosts: list[Host]
    image: BaseImage
    team: Team
    dev: User


@pytest.fixture
def lab_fleet(live_lab_hosts: list[Host]) -> Fleet:
    lab = fleet.up(fleet.LabConfig.from_settings(), log=lambda _: None)
    register_pool(
        lab[0].config, live_lab_hosts, log=lambda _: None, first="10.213.200.1", last="10.213.239.254"
    )
    prepare_lab_hosts(live_lab_hosts, log=lambda _: None)
    (image,) = register_images(("busybox",), log=lambda _: None)
    team = Team.objects.create(slug="fleet-team", name="Fleet team")
    dev = User.objects.create_user("dev", "dev@example.invalid", "pw-dev")
    Membership.objects.create(team=team, user=dev, role=Membership.Role.DEVELOPER)
    User.objects.create_user("ops", "ops@example.invalid", "pw-ops", is_staff=True)
    return Fleet(lab, live_lab_hosts, image, team, dev)


# Journeys start where a user starts: signed in on the home page, then clicks. These helpers
# are the clicks every journey shares.


def login(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", "pw-" + username)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name=re.compile("Welcome"))).to_be_visible()


def open_app(page: Page, slug: str) -> None:
    """From any page: Apps in the top bar, then the app in the list."""
    page.locator("header nav").get_by_role("link", name="Apps").click()
    page.locator("#app-table").get_by_role("link", name=slug, exact=True).click()
    expect(page.get_by_role("heading", name=slug, exact=True)).to_be_visible()
    page.wait_for_load_state()  # htmx (a deferred script) has wired the buttons


def open_host(page: Page, name: str) -> None:
    """From any page (ops): Hosts in the top bar, then the host in the list."""
    page.locator("header nav").get_by_role("link", name="Hosts").click()
    page.locator("table.grid").first.get_by_role("link", name=name, exact=True).click()
    expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
    page.wait_for_load_state()  # htmx (a deferred script) has wired the buttons
