"""Secret variables in the browser: a developer adds one on the Edit page (typed into a password
box), marks a plain variable secret, and finds both named and masked on the app page; the value
is in no page the browser is given afterwards, the edit form included. In a VM move's plan, the
variables that look secret are secret rows whose values the developer types, and never sees again."""

from __future__ import annotations

from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from apps.accounts.models import Membership, Team
from apps.applications import secret_env, services
from apps.applications.models import App, BaseImage
from apps.relocations.models import Inspection, Relocation
from tests.browser.conftest import login
from tests.plain.test_relocation_plan import REPORT

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


def test_a_developer_types_the_vms_secrets_into_the_plan_and_never_sees_them_again(
    page: Page,
    live_server,  # type: ignore[no-untyped-def]
    transactional_db: None,
    screenshot,  # type: ignore[no-untyped-def]
) -> None:
    team = Team.objects.create(slug="alpha", name="Alpha")
    dev = User.objects.create_user("dev", "dev@example.invalid", "pw-dev")
    Membership.objects.create(team=team, user=dev)
    BaseImage.objects.create(name="slipway/debian-python", tag="1", runtime="python")
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVzZWQgb25seSBpbiB0ZXN0cyBrZXkga2V5IGtleQ=="
    relocation = Relocation.objects.create(
        team=team,
        name="notes",
        address="10.50.0.19",
        offered_key=key,
        host_key=key,
        state=Relocation.State.INSPECTED,
        created_by=dev,
    )
    # The inspection (its report as the worker stores it) masked DB_PASSWORD's value.
    Inspection.objects.create(relocation=relocation, report=REPORT)
    login(page, live_server.url, "dev")
    page.goto(f"{live_server.url}/relocations/{relocation.pk}/")

    plan = page.locator("#plan-form")
    row = plan.locator('tr[data-secret="DB_PASSWORD"]')
    expect(row).to_contain_text("to type")
    expect(plan.locator("#id_env")).not_to_contain_text("DB_PASSWORD")
    # Saved without its value: asked for, next to the secrets, and nothing is saved.
    plan.get_by_role("button", name="Save the plan").click()
    expect(plan.locator("#secrets .error")).to_contain_text("Type the values of DB_PASSWORD")
    box = plan.get_by_label("Value of DB_PASSWORD")
    expect(box).to_have_attribute("type", "password")
    box.fill(VALUE)
    plan.locator("#secrets").get_by_label("NOTES_TITLE").check()  # a plain one, marked secret
    screenshot("plan-secrets")
    plan.get_by_role("button", name="Save the plan").click()

    expect(page.locator(".messages")).to_contain_text("Plan saved.")
    expect(page.locator('tr[data-secret="DB_PASSWORD"]')).to_contain_text("saved: ********")
    expect(page.locator('tr[data-secret="NOTES_TITLE"]')).to_contain_text("saved: ********")
    expect(page.get_by_label("New value of DB_PASSWORD")).to_have_value("")
    assert VALUE not in page.content()
    relocation.refresh_from_db()
    assert relocation.plan["env"] == {}
    assert secret_env.opened(relocation.plan["secrets"]) == {"DB_PASSWORD": VALUE, "NOTES_TITLE": "Ops notes"}
    api = page.request.get(f"{live_server.url}/api/v1/relocations/{relocation.pk}/plan/")
    assert api.json()["plan"]["secrets"] == {"DB_PASSWORD": "********", "NOTES_TITLE": "********"}
    assert VALUE not in api.text()
