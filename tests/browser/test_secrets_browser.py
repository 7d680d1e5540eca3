"""Secret variables in the browser: a developer adds one on the Edit page (typed into a password
box), marks a plain variable secret, and finds both named and masked on the app page; the value
is in no page the browser is given afterwards, the edit form included."""

from __future__ import annotations

from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from apps.accounts.models import Membership, Team
from apps.applications import secret_env, services
from apps.applications.models import App, BaseImage

VALUE = "browser-Secret-51e0aa"


def test_a_developer_adds_a_secret_and_marks_one_and_never_sees_a_value_again(
    page: Page,
    live_server,  # type: ignore[no-untyped-def]
    transactional_db: None,
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    team = Team.objects.create(slug="alpha", name="Alpha")
    dev = User.objects.create_user("dev", "dev@example.invalid", "pw-dev")
    Membership.objects.create(team=team, user=dev)
    image = BaseImage.objects.create(
        name="slipway/busybox", tag="1", runtime="busybox", default_command=["sh"]
    )
    services.app_create(
        user=dev, team=team, slug="shop", base_image=image, env={"MODE": "a", "API_KEY": "k-7"}
    )
    base = live_server.url
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", "dev")
    page.fill("input[name=password]", "pw-dev")
    page.click("button[type=submit]")
    page.goto(f"{base}/apps/shop/edit/")

    page.fill("input[name=new_secret_name_0]", "DB_PASSWORD")
    value_box = page.locator("input[name=new_secret_value_0]")
    expect(value_box).to_have_attribute("type", "password")
    value_box.fill(VALUE)
    page.locator("#secrets").get_by_label("API_KEY").check()
    page.fill("textarea[name=env]", "MODE=a\nAPI_KEY=k-7")
    page.get_by_role("button", name="Save").click()

    expect(page).to_have_url(f"{base}/apps/shop/")
    names = page.locator("#secret-names")
    expect(names).to_contain_text("API_KEY=********")
    expect(names).to_contain_text("DB_PASSWORD=********")
    assert VALUE not in page.content()
    app = App.objects.get(slug="shop")
    assert app.env == {"MODE": "a"}
    assert secret_env.opened(app.secrets) == {"API_KEY": "k-7", "DB_PASSWORD": VALUE}

    # Back on the edit form: a row per secret, its value never filled in.
    page.get_by_role("link", name="replace or delete").click()
    row = page.locator('tr[data-secret="DB_PASSWORD"]')
    expect(row).to_contain_text("********")
    expect(row.locator("input[type=password]")).to_have_value("")
    assert VALUE not in page.content() and "k-7" not in page.content()
    screenshot("secrets-edit")
