"""The image registry in Chromium, against the lab's real registry (Debian's docker-registry, TLS
from the lab CA) and a real Celery worker: ops set it on its page, where wrong credentials are
refused in place at save time and nothing is stored; then a version published from the Base
images page is pushed once and pulled by both hosts, and the page says so, without a reload."""

from __future__ import annotations

import secrets

from playwright.sync_api import Page, expect

from apps.applications.models import BaseImage, BuildState
from apps.images.models import Registry
from apps.lab import fleet
from apps.lab import registry as lab_registry
from tests.browser.conftest import Fleet, login


def test_ops_set_the_registry_and_a_version_goes_to_the_hosts_through_it(
    page: Page,
    live_server,  # type: ignore[no-untyped-def]
    lab_fleet: Fleet,
    worker: None,
) -> None:
    lab, image = lab_fleet.lab, lab_fleet.image
    registry = lab_registry.up(lab[0].config, log=lambda _: None)
    username, password = registry.credentials()
    version = BaseImage.objects.create(
        name=image.name,
        tag=f"reg-b-{secrets.token_hex(3)}",
        runtime=image.runtime,
        recipe=image.recipe,
        state=BuildState.DRAFT,
    )
    try:
        login(page, live_server.url, "ops")
        page.get_by_role("link", name="Base images").click()
        page.get_by_role("link", name="Image registry").click()
        card = page.locator("#registry-card")
        expect(card.locator("[data-registry-state]")).to_contain_text("SSH streaming")
        card.get_by_label("URL").fill(registry.url)
        card.get_by_label("Username").fill(username)
        card.get_by_label("Password", exact=True).fill("not-" + password)
        card.get_by_label("CA certificate (PEM)").fill(registry.ca_pem())
        card.get_by_label("Publish through this registry").check()
        card.get_by_role("button", name="Check and save").click()
        expect(card.locator(".error").first).to_contain_text(f"rejects the credentials for user {username}")
        assert not Registry.objects.filter(enabled=True).exists()
        # The password box is empty again after a refusal: it is never sent back to the page.
        expect(card.get_by_label("Password", exact=True)).to_have_value("")
        card.get_by_label("Password", exact=True).fill(password)
        card.get_by_role("button", name="Check and save").click()
        expect(card.locator("[data-registry-state]")).to_contain_text(f"publishing through {registry.url}")
        expect(card.locator("[data-password-state]")).to_contain_text("set (hidden)")
        assert password not in page.content()

        page.get_by_role("link", name="← Base images").click()
        row = page.locator(f'tr[data-version="{version.reference}"]')
        row.get_by_role("button", name="Publish").click()
        expect(row).to_contain_text("published", timeout=60_000)
        for lab_host in lab:
            expect(row.locator(f'li[data-host="{lab_host.name}"]')).to_contain_text("loaded")
            expect(row.locator(f'li[data-host="{lab_host.name}"]')).to_contain_text(
                f"pulled from {registry.hostport}"
            )
        version.refresh_from_db()
        for lab_host in lab:
            found = fleet.docker(
                lab_host, "image", "inspect", "-f", "{{.Id}}", version.reference, check=False
            )
            assert found.stdout.strip() == version.digest
        assert password not in page.content()
    finally:
        Registry.objects.all().delete()
        for lab_host in lab:
            for reference in (version.reference, f"{registry.hostport}/{version.reference}"):
                fleet.docker(lab_host, "rmi", reference, check=False)
