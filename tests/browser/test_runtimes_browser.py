"""A new base image in Chromium, through a real Celery worker: ops start one from a ready-made
recipe (the form filled from it), an unknown package is refused by name before anything is made,
then a build from Debian's packages shows its step live on the Base images page and ops cancel
it there, without a reload."""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings
from playwright.sync_api import Page, expect

from apps.applications.models import BaseImage, BuildState
from apps.images import packages, rootfs, starters
from tests.browser.conftest import Fleet, login
from tests.helpers import eventually

# A small tree, so the build is short when it is not cancelled; taken out of the cache first so
# this run builds it.
PACKAGES = ("hello",)


def test_ops_make_an_image_from_a_ready_made_recipe_then_cancel_its_build(
    page: Page,
    live_server,  # type: ignore[no-untyped-def]
    lab_fleet: Fleet,
    worker: None,
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    tree = Path(settings.ROOTFS_CACHE) / (
        f"debian-bookworm-{rootfs.debian_key(packages.release('bookworm').deb_lines, PACKAGES)}.tar"
    )
    tree.unlink(missing_ok=True)
    login(page, live_server.url, "ops")
    page.get_by_role("link", name="Base images").click()
    page.get_by_role("link", name="New image").click()
    page.locator("#starters").get_by_role("link", name="Node.js").click()
    form = page.locator("#image-form")
    expect(form.locator("#id_name")).to_have_value(starters.NODE.name)
    expect(form.locator("#id_recipe")).to_have_value(starters.NODE.recipe)
    form.locator("#id_name").fill("slipway/hello-browser")
    form.locator("#id_recipe").fill("FROM debian:bookworm\nPACKAGES hello nosuch-package\n")
    form.get_by_role("button", name="Make draft").click()
    expect(form.locator(".field-error").first).to_contain_text(
        "nosuch-package is not a package in Debian bookworm"
    )
    assert not BaseImage.objects.filter(name="slipway/hello-browser").exists()
    form.locator("#id_recipe").fill('FROM debian:bookworm\nPACKAGES hello\nCMD ["/usr/bin/hello"]\n')
    form.get_by_role("button", name="Make draft").click()
    row = page.locator('tr[data-version="slipway/hello-browser:18"]')
    expect(row).to_contain_text("draft")

    row.get_by_role("button", name="Publish").click()
    expect(page.locator("#images-notice")).to_contain_text("Building slipway/hello-browser:18")
    # The step comes live as the worker builds.
    steps = "|".join(words for _, words in rootfs.STEPS[:5])
    expect(row.locator(".build-step")).to_contain_text(re.compile(steps), timeout=60_000)
    screenshot("building")
    row.get_by_role("button", name="Cancel").click()
    expect(page.locator("#images-notice")).to_contain_text(
        "Cancelled the publish of slipway/hello-browser:18"
    )
    expect(row).to_contain_text("Cancelled by ops while")
    expect(row).to_contain_text("failed")
    image = BaseImage.objects.get(name="slipway/hello-browser")
    assert image.state == BuildState.FAILED and image.build_error.startswith("Cancelled by ops while ")
    # The worker stopped the build: nothing of it runs or is left.
    eventually(lambda: not _building(tree.name), 30, "mmdebstrap stopped")
    assert not tree.exists()


def _building(name: str) -> bool:
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and name.encode() in (entry / "cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False
