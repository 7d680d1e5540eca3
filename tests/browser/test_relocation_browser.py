"""A developer moves a lab VM's app into a container entirely in Chromium: registers the VM,
compares and pins its host key, installs the portal's key with the root password, inspects the
VM, saves the suggested plan and moves it, watching the steps run through a real Celery worker.
The app then answers on the VM's own address from a container with the same bytes, and the
VM's service is stopped. A plan with a system directory is refused next to its field."""

from __future__ import annotations

import shutil
import time
import urllib.request
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from apps.accounts.models import Membership, Team
from apps.applications.models import BaseImage
from apps.hosts.models import Host
from apps.hosts.transport import fingerprint
from apps.lab import fleet
from apps.lab.register import prepare_lab_hosts, register_images, register_pool
from apps.lab.vm import (
    LegacyVM,
    vm_down,
    vm_exec,
    vm_host_public_key,
    vm_password,
    vm_restore,
    vm_up,
)
from apps.network.models import IPAllocation, IPPool
from apps.relocations import services
from apps.relocations.models import Relocation
from tests.browser.conftest import login

# Inside the tests' pool range, apart from the docker tests' VM (10.213.232.x) and the
# addresses the tests' instances take (from 10.213.200.1 up).
SSH_ADDRESS = "10.213.233.11"
SERVICE_ADDRESS = "10.213.233.10"
SLUG = "notes"


@pytest.fixture(scope="module")
def vm() -> Iterator[LegacyVM]:
    machine = LegacyVM(
        fleet.LabConfig.from_settings(),
        "vmw",
        ssh_address=IPv4Address(SSH_ADDRESS),
        service_address=IPv4Address(SERVICE_ADDRESS),
    )
    vm_up(machine, log=lambda _: None)
    yield machine
    vm_down(machine)


@pytest.fixture
def served(vm: LegacyVM) -> Iterator[LegacyVM]:
    """The VM serving as before each test; afterwards the test's containers go first (one may
    hold the VM's address), then the VM gets its address and service back."""
    vm_restore(vm)
    _forget_volumes()
    yield vm
    for lab_host in fleet.LabConfig.from_settings().all_hosts():
        ids = fleet.docker(lab_host, "ps", "-aq", "--filter", f"label=io.slipway.app={SLUG}").stdout.split()
        if ids:
            fleet.docker(lab_host, "rm", "-f", *ids, check=False)
    _forget_volumes()
    vm_restore(vm)


def _forget_volumes() -> None:
    # The hosts' disks outlive the test database: a copy left by an earlier run would be "resumed".
    for lab_host in fleet.LabConfig.from_settings().all_hosts():
        shutil.rmtree(lab_host.volume_root / SLUG, ignore_errors=True)


@pytest.fixture
def pool(live_lab_hosts: list[Host]) -> IPPool:
    """The tests' range of the lab's public pool, on both lab hosts, which pass their checks."""
    pool = register_pool(
        fleet.LabConfig.from_settings(),
        live_lab_hosts,
        log=lambda _: None,
        first="10.213.200.1",
        last="10.213.239.254",
    )
    hosts = prepare_lab_hosts(live_lab_hosts, log=lambda _: None)
    assert all(h.checks_ok for h in hosts), [h.checks for h in hosts]
    return pool


@pytest.fixture
def python_image(live_lab_hosts: list[Host]) -> BaseImage:
    images = {
        image.name: image for image in register_images(("busybox", "debian-python"), log=lambda _: None)
    }
    return images["slipway/debian-python"]


@pytest.fixture
def developer(transactional_db: None) -> User:
    team = Team.objects.create(slug="ops-team", name="Ops team")
    dev = User.objects.create_user("dev", "dev@example.invalid", "pw-dev")
    Membership.objects.create(team=team, user=dev, role=Membership.Role.DEVELOPER)
    return dev


def _get(path: str = "/", timeout: float = 3) -> bytes:
    url = f"http://{SERVICE_ADDRESS}:8080{path}"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


def _get_eventually(path: str = "/", timeout: float = 20) -> bytes:
    """Neighbours may take a moment to learn where the address went."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _get(path)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_a_developer_moves_the_vms_app_into_a_container_in_the_browser(
    page: Page,
    live_server: LiveServer,
    served: LegacyVM,
    developer: User,
    pool: IPPool,
    python_image: BaseImage,
    worker: None,
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    vm = served
    before = _get()
    assert b"Ops team notes" in before
    expected_fingerprint = fingerprint(vm_host_public_key(vm))

    # Register the VM.
    base = live_server.url
    login(page, base, "dev")
    page.locator("header nav").get_by_role("link", name="Move a VM").click()
    expect(page.get_by_role("heading", name="VM moves")).to_be_visible()
    page.locator(".titlebar").get_by_role("link", name="Move a VM").click()
    expect(page.get_by_role("heading", name="Move a VM")).to_be_visible()
    page.select_option("#id_team", label="Ops team")
    page.fill("#id_name", "notes")
    page.fill("#id_address", SSH_ADDRESS)
    screenshot("register")
    page.get_by_role("button", name="Register the VM").click()

    # Trust: the person compares the offered fingerprint with the VM's own and types it.
    expect(page.get_by_role("heading", name="Move notes")).to_be_visible()
    expect(page.locator(".messages")).to_contain_text("notes registered.")
    expect(page.locator("#offered-fingerprint")).to_have_text(expected_fingerprint)
    screenshot("trust")
    # First a real mismatch: the warning, and nothing pinned. Then the line `ssh-keygen -lf`
    # prints on the VM, pasted whole, as people do.
    page.get_by_label("Fingerprint seen on the VM").fill("256 SHA256:" + "A" * 43 + " root@vm1 (ED25519)")
    page.get_by_role("button", name="Confirm and pin").click()
    expect(page.locator("body")).to_contain_text("That is not the fingerprint the VM offered")
    expect(page.locator("body")).not_to_contain_text("`")
    page.get_by_label("Fingerprint seen on the VM").fill(f"256 {expected_fingerprint} root@vm1 (ED25519)")
    page.get_by_role("button", name="Confirm and pin").click()
    expect(page.locator(".messages")).to_contain_text("Host key pinned")
    expect(page.locator("#key-pinned")).to_contain_text(expected_fingerprint)
    page.get_by_label("Password of the SSH user").fill(vm_password(vm))
    page.get_by_role("button", name="Install the key").click()
    expect(page.locator(".messages")).to_contain_text("The portal's key is installed for root")
    expect(page.locator("#key-installed")).to_be_visible()
    screenshot("pinned")

    # Inspect: the page polls until the worker's inspection is in.
    inspect = page.locator("#inspect")
    inspect.get_by_role("button", name="Inspect the VM").click()
    expect(page.locator("#report-link")).to_be_visible(timeout=90_000)
    expect(inspect.locator(".error")).to_have_count(0)
    expect(inspect).to_contain_text("python")
    expect(inspect).to_contain_text("1 listening port")
    screenshot("inspected")

    page.locator("#report-link").click()
    expect(page.get_by_role("heading", name="Inspection of notes")).to_be_visible()
    expect(page.locator("#listening tr[data-port='8080']")).to_contain_text("python")
    expect(page.locator("#system")).to_contain_text("python")
    expect(page.locator("#candidates")).to_contain_text("/srv/notes")
    expect(page.locator(f"#addresses tr[data-address='{SERVICE_ADDRESS}']")).to_be_visible()
    screenshot("inspection-report")
    page.get_by_role("link", name="← Move notes").click()

    # Plan: prefilled from the inspection.
    plan = page.locator("#plan-form")
    expect(plan).to_be_visible()
    expect(plan.locator("#id_keep_address")).to_have_value(SERVICE_ADDRESS)
    expect(plan.locator("#id_app_dir")).to_have_value("/srv/notes")
    expect(plan.locator("#id_app_slug")).to_have_value(SLUG)
    expect(plan.locator("#id_base_image")).to_have_value(str(python_image.pk))
    expect(plan.locator("#id_port")).to_have_value("8080")
    screenshot("plan")
    plan.get_by_role("button", name="Save the plan").click()
    expect(page.locator(".messages")).to_contain_text("Plan saved.")
    expect(page.locator("#plan h2")).to_contain_text("saved")
    relocation = Relocation.objects.get(name="notes")
    assert relocation.state == Relocation.State.PLANNED
    assert relocation.plan["keep_address"] == SERVICE_ADDRESS

    # Move it: the step rows follow the worker until the success box.
    page.locator("#run-form").get_by_role("button", name="Move it").click()
    live = page.locator("#live")
    state = live.locator(".progress [data-state]")
    expect(state).not_to_have_attribute("data-state", "planned")
    moving = state.get_attribute("data-state") == "running"
    if moving:
        # Marks this document: if it is still here at the end, the polling brought the outcome.
        page.evaluate("window.__slipwayMoving = true")
        expect(live.locator("tr[data-step]")).to_have_count(5)
        # The worker has taken the run once the first step leaves "waiting".
        copy = live.locator("tr[data-step='copy']")
        expect(copy).not_to_have_attribute("data-state", "pending", timeout=60_000)
        if state.get_attribute("data-state") == "running":
            screenshot("moving")
    moved = page.locator("#moved")
    expect(moved.or_(page.locator("#run-error"))).to_be_visible(timeout=240_000)
    expect(moved).to_be_visible()
    for step in ("copy", "create", "health", "cutover", "verify"):
        expect(live.locator(f"tr[data-step='{step}']")).to_have_attribute("data-state", "done")
    expect(live.locator("tr[data-step='copy']")).to_contain_text("sha256 of every file verified")
    expect(page.locator("#serves-at")).to_have_text(f"{SERVICE_ADDRESS}:8080")
    if moving:
        assert page.evaluate("window.__slipwayMoving === true")
    screenshot("moved")

    # The success box links to the app, whose instance runs on the VM's address.
    moved.get_by_role("link", name=SLUG).click()
    expect(page.get_by_role("heading", name=SLUG, exact=True)).to_be_visible()
    row = page.locator(f"#instances tr[data-instance='slw-{SLUG}-0']")
    expect(row).to_contain_text(SERVICE_ADDRESS)
    expect(row).to_contain_text("Running")
    expect(row).to_contain_text(f"{SERVICE_ADDRESS}:8080")
    screenshot("app")

    # Real traffic: the same bytes from the container; the VM's service is stopped.
    assert _get_eventually() == before
    assert vm_exec(vm, "/etc/init.d/notes", "status", check=False).returncode != 0


def test_a_plan_with_a_system_directory_is_refused_next_to_the_field(
    page: Page,
    live_server: LiveServer,
    served: LegacyVM,
    developer: User,
    pool: IPPool,
    python_image: BaseImage,
    worker: None,
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    vm = served
    team = Team.objects.get(slug="ops-team")
    relocation = services.relocation_register(user=developer, team=team, name="notes", address=SSH_ADDRESS)
    relocation = services.relocation_confirm_key(
        user=developer, relocation=relocation, fingerprint_seen=fingerprint(vm_host_public_key(vm))
    )
    relocation = services.relocation_install_key(
        user=developer, relocation=relocation, password=vm_password(vm)
    )

    login(page, live_server.url, "dev")
    page.goto(f"{live_server.url}/relocations/{relocation.pk}/")
    page.locator("#inspect").get_by_role("button", name="Inspect the VM").click()
    plan = page.locator("#plan-form")
    expect(plan.locator("#id_app_dir")).to_have_value("/srv/notes", timeout=90_000)
    plan.locator("#id_app_dir").fill("/etc")
    plan.get_by_role("button", name="Save the plan").click()

    error = plan.locator("#field-app_dir .error")
    expect(error).to_have_text("/etc is a system directory of the VM; give the app's own directory.")
    expect(plan.locator(".error")).to_have_count(1)  # the rest of the suggestion was fine
    # What was typed comes back, to be corrected; nothing was saved.
    expect(plan.locator("#id_app_dir")).to_have_value("/etc")
    expect(plan.locator("#id_keep_address")).to_have_value(SERVICE_ADDRESS)
    expect(page.locator("#plan h2 .badge")).to_have_count(0)
    screenshot("plan-refused")
    relocation.refresh_from_db()
    assert relocation.state == Relocation.State.INSPECTED
    assert relocation.plan == {} and relocation.planned_at is None
    assert not IPAllocation.objects.filter(address=SERVICE_ADDRESS).exists()
