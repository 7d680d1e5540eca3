"""Secret variables without hosts: sealed at rest, write-only, masked in every answer, changes
named without values, refused inputs, rollback, rotation of the key. The container getting the
value, and a whole deploy searched for it: tests/docker/test_secrets_on_lab.py."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.core.signals import got_request_exception
from django.db import connection
from django.http import HttpRequest
from django.test import Client, override_settings
from django.views.debug import ExceptionReporter

from apps.accounts.models import Team
from apps.alerts import services as alerts
from apps.alerts.models import Webhook
from apps.applications import releases, secret_env, services
from apps.applications.models import App, BaseImage, Release
from apps.audit.models import AuditEntry
from apps.hosts import gateway
from apps.images import registry_settings
from apps.images.models import Registry
from apps.instances import executor
from apps.instances.address_probe import AddressGate
from apps.instances.models import Instance, Operation
from apps.instances.spec import instance_spec
from apps.relocations.models import Relocation
from tests.helpers import api_client

VALUE = "s3cr3t-Value-Ω-7d1e"
OTHER = "an0ther-Value-92c4"


@pytest.fixture
def web(owner: User, alpha: Team, image: BaseImage) -> App:
    app = services.app_create(
        user=owner,
        team=alpha,
        slug="web",
        base_image=image,
        env={"MODE": "a"},
        secrets={"DB_PASSWORD": VALUE},
    )
    services.app_scale(user=owner, app=app, instances=1)
    return app


def _done() -> None:
    Operation.objects.filter(kind=Operation.Kind.RELEASE).update(status=Operation.Status.SUCCEEDED)


def _edit_form(web: App, **fields: object) -> dict[str, object]:
    """The app's Edit form as the page sends it, with `fields` on top."""
    return {
        "base_image": web.base_image_id,
        "env": "MODE=a",
        "health_check": web.health_check,
        "health_path": web.health_path,
        "health_timeout": web.health_timeout,
        **fields,
    }


def _raw_rows() -> str:
    """Everything the database holds for apps and releases, as text."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM catalog_app")
        apps = cursor.fetchall()
        cursor.execute("SELECT * FROM catalog_release")
        rels = cursor.fetchall()
    return repr(apps) + repr(rels)


def test_a_secret_is_stored_sealed_and_the_container_gets_its_value(web: App) -> None:
    web.refresh_from_db()
    assert list(web.secrets) == ["DB_PASSWORD"]
    assert VALUE not in _raw_rows()
    assert secret_env.unseal("DB_PASSWORD", web.secrets["DB_PASSWORD"]) == VALUE
    release = web.releases.get()
    assert release.secrets == web.secrets
    env = dict(instance_spec(Instance.objects.get(app=web)).env)
    assert (env["DB_PASSWORD"], env["MODE"]) == (VALUE, "a")


def test_the_api_shows_names_masked_never_the_value(owner: User, web: App) -> None:
    api = api_client(owner)
    body = api.get(f"/api/v1/apps/{web.slug}/").json()
    assert body["secrets"] == {"DB_PASSWORD": "********"}
    assert body["env"] == {"MODE": "a"}
    listed = api.get("/api/v1/apps/").content.decode()
    rels = api.get(f"/api/v1/apps/{web.slug}/releases/").json()
    assert rels["results"][0]["secret_names"] == ["DB_PASSWORD"]
    for text in (json.dumps(body), listed, json.dumps(rels)):
        assert VALUE not in text


def test_the_api_creates_replaces_and_deletes_secrets_each_a_release(
    owner: User, alpha: Team, image: BaseImage
) -> None:
    api = api_client(owner)
    made = api.post(
        "/api/v1/apps/",
        {"slug": "api-app", "team": "alpha", "base_image": image.pk, "secrets": {"TOKEN": VALUE}},
        format="json",
    )
    assert made.status_code == 201, made.content
    assert made.json()["secrets"] == {"TOKEN": "********"} and VALUE not in made.content.decode()
    changed = api.patch(
        "/api/v1/apps/api-app/", {"secrets": {"TOKEN": OTHER, "API_KEY": VALUE}}, format="json"
    )
    assert changed.status_code == 200, changed.content
    app = App.objects.get(slug="api-app")
    assert app.release is not None and app.release.changes == [
        "secret added: API_KEY",
        "secret changed: TOKEN",
    ]
    assert secret_env.opened(app.secrets) == {"TOKEN": OTHER, "API_KEY": VALUE}
    deleted = api.patch("/api/v1/apps/api-app/", {"secrets": {"API_KEY": None}}, format="json")
    assert deleted.status_code == 200 and deleted.json()["secrets"] == {"TOKEN": "********"}
    app.refresh_from_db()
    assert app.release is not None and app.release.changes == ["secret removed: API_KEY"]


def test_saving_the_stored_value_answers_exactly_as_saving_another_one(owner: User, web: App) -> None:
    """Nobody can confirm a guessed value by saving it: the value stored and a wrong guess each
    make a release that says the secret changed, with the same answer."""
    api = api_client(owner)
    answers = []
    for guess in (VALUE, OTHER):
        answer = api.patch(f"/api/v1/apps/{web.slug}/", {"secrets": {"DB_PASSWORD": guess}}, format="json")
        assert answer.status_code == 200, answer.content
        web.refresh_from_db()
        assert web.release is not None and web.release.changes == ["secret changed: DB_PASSWORD"]
        answers.append(answer.json() | {"release": None, "updated_at": None})
        _done()
    assert answers[0] == answers[1]
    assert [r.number for r in web.releases.all()] == [3, 2, 1]
    client = Client()
    client.force_login(owner)
    form = _edit_form(web, secret_value__DB_PASSWORD=OTHER)  # the value stored now
    page = client.post(f"/apps/{web.slug}/edit/", form, follow=True).content.decode()
    assert "A new release is deployed" in page and web.releases.count() == 4


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"secrets": {"DB_PASSWORD": "********"}}, "is the mask shown in place of the value"),
        ({"secrets": {"MODE": "x"}}, "MODE is also a plain variable"),
        ({"env": {"MODE": "a", "DB_PASSWORD": "x"}}, "DB_PASSWORD is also a plain variable"),
        ({"secrets": {"NOPE": None}}, "NOPE is not a secret of this app"),
        ({"secrets": {"9BAD": "x"}}, "Secret name '9BAD' is not allowed"),
        ({"secrets": {"SLIPWAY_X": "x"}}, "are set by Slipway"),
        ({"secrets": {"N": 5}}, "The value of N must be a string"),
        ({"secrets": {"N": "a\x00b"}}, "contains a NUL byte"),
        ({"secrets": ["DB_PASSWORD"]}, 'Secrets are an object of NAME: "value" pairs'),
        ({"make_secret": ["GONE"]}, "GONE is not a plain variable of web"),
    ],
)
def test_bad_secrets_are_refused_with_what_is_allowed_and_nothing_changes(
    owner: User, web: App, body: dict[str, object], message: str
) -> None:
    before = (web.releases.count(), dict(App.objects.get(pk=web.pk).secrets))
    answer = api_client(owner).patch(f"/api/v1/apps/{web.slug}/", body, format="json")
    assert answer.status_code == 400, answer.content
    assert message in str(answer.json())
    assert (web.releases.count(), dict(App.objects.get(pk=web.pk).secrets)) == before


def test_a_plain_variable_can_be_marked_secret_and_keeps_its_value(owner: User, web: App) -> None:
    services.app_update(user=owner, app=web, make_secret=["MODE"])
    web.refresh_from_db()
    assert web.env == {} and secret_env.opened(web.secrets) == {"DB_PASSWORD": VALUE, "MODE": "a"}
    assert web.release is not None and web.release.changes == ["env removed: MODE", "secret added: MODE"]


def test_marking_a_variable_secret_seals_it_in_every_earlier_release_and_a_rollback_keeps_it_secret(
    owner: User, web: App
) -> None:
    first, second = "plain-First-8e1f", "plain-Second-41ac"
    services.app_update(user=owner, app=web, env={"MODE": "a", "API_KEY": first})
    _done()
    services.app_update(user=owner, app=web, env={"MODE": "a", "API_KEY": second})
    _done()
    assert first in _raw_rows() and second in _raw_rows()  # plain until now: the search can fail
    services.app_update(user=owner, app=web, make_secret=["API_KEY"])
    _done()
    assert first not in _raw_rows() and second not in _raw_rows()
    by_number = {r.number: r for r in web.releases.all()}
    assert [("API_KEY" in r.env) for r in by_number.values()] == [False] * 4
    assert secret_env.opened(by_number[2].secrets) == {"DB_PASSWORD": VALUE, "API_KEY": first}
    assert secret_env.opened(by_number[3].secrets) == {"DB_PASSWORD": VALUE, "API_KEY": second}
    assert secret_env.opened(by_number[1].secrets) == {"DB_PASSWORD": VALUE}
    # The old release again: the variable comes back as a secret, with the value it ran with.
    releases.release_rollback(user=owner, app=web, number=2)
    web.refresh_from_db()
    assert web.env == {"MODE": "a"}
    assert secret_env.opened(web.secrets) == {"DB_PASSWORD": VALUE, "API_KEY": first}
    assert first not in _raw_rows()
    Instance.objects.filter(app=web).update(release=web.release)  # as the deploy leaves it
    env = dict(instance_spec(Instance.objects.get(app=web)).env)
    assert env["API_KEY"] == first


def test_a_name_made_secret_by_removing_it_from_env_is_sealed_in_earlier_releases_too(
    owner: User, web: App
) -> None:
    services.app_update(user=owner, app=web, env={"MODE": "a", "API_KEY": "plain-Third-c3d0"})
    _done()
    services.app_update(user=owner, app=web, env={"MODE": "a"}, secrets={"API_KEY": "new-Value-0f"})
    assert "plain-Third-c3d0" not in _raw_rows()


def test_a_rollback_brings_back_the_secrets_the_release_ran_with(owner: User, web: App) -> None:
    services.app_update(user=owner, app=web, secrets={"DB_PASSWORD": OTHER})
    _done()
    first = web.releases.get(number=1)
    releases.release_rollback(user=owner, app=web, number=first.number)
    web.refresh_from_db()
    assert secret_env.opened(web.secrets) == {"DB_PASSWORD": VALUE}
    assert web.release is not None and "secret changed: DB_PASSWORD" in web.release.changes


def test_the_pages_show_names_masked_and_the_edit_form_replaces_deletes_and_marks(
    owner: User, web: App
) -> None:
    client = Client()
    client.force_login(owner)
    for url in (f"/apps/{web.slug}/", f"/apps/{web.slug}/edit/", f"/apps/{web.slug}/activity/"):
        page = client.get(url).content.decode()
        assert VALUE not in page, url
    edit = client.get(f"/apps/{web.slug}/edit/").content.decode()
    assert "DB_PASSWORD" in edit and 'name="secret_value__DB_PASSWORD"' in edit
    form = _edit_form(
        web,
        env="MODE=a\nLEVEL=3",
        secret_value__DB_PASSWORD=OTHER,
        new_secret_name_0="API_KEY",
        new_secret_value_0=VALUE,
        make_secret=["MODE"],
    )
    saved = client.post(f"/apps/{web.slug}/edit/", form)
    assert saved.status_code == 302, re.findall(r'role="alert">([^<]*)', saved.content.decode())
    web.refresh_from_db()
    assert web.env == {"LEVEL": "3"}
    assert secret_env.opened(web.secrets) == {"DB_PASSWORD": OTHER, "API_KEY": VALUE, "MODE": "a"}
    _done()
    form = {**form, "env": "LEVEL=3", "make_secret": [], "secret_value__DB_PASSWORD": ""}
    form.update({"new_secret_name_0": "", "new_secret_value_0": "", "secret_delete__API_KEY": "on"})
    assert client.post(f"/apps/{web.slug}/edit/", form).status_code == 302
    web.refresh_from_db()
    assert sorted(web.secrets) == ["DB_PASSWORD", "MODE"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"new_secret_value_0": "x"}, "Name the secret whose value you typed."),
        ({"new_secret_name_0": "DB_PASSWORD", "new_secret_value_0": "x"}, "DB_PASSWORD is already a secret"),
        ({"secret_value__DB_PASSWORD": "x", "secret_delete__DB_PASSWORD": "on"}, "not both"),
        ({"new_secret_name_0": "MODE", "new_secret_value_0": "x"}, "MODE is also a plain variable"),
    ],
)
def test_the_edit_form_says_what_is_wrong_with_a_secret(
    owner: User, web: App, fields: dict[str, str], message: str
) -> None:
    client = Client()
    client.force_login(owner)
    form = _edit_form(web, **fields)
    answer = client.post(f"/apps/{web.slug}/edit/", form)
    assert answer.status_code == 400
    assert message in answer.content.decode()
    assert "x" not in [v for v in secret_env.opened(App.objects.get(pk=web.pk).secrets).values()]
    assert web.releases.count() == 1


def test_the_create_form_takes_secrets(owner: User, alpha: Team, image: BaseImage) -> None:
    client = Client()
    client.force_login(owner)
    form = {
        "slug": "formed",
        "team": alpha.pk,
        "base_image": image.pk,
        "memory_mb": 64,
        "cpus": "0.25",
        "instances": 0,
        "new_secret_name_1": "TOKEN",
        "new_secret_value_1": VALUE,
    }
    answer = client.post("/apps/new/", form)
    assert answer.status_code == 302, answer.content.decode()[:3000]
    assert secret_env.opened(App.objects.get(slug="formed").secrets) == {"TOKEN": VALUE}


@pytest.fixture
def moved(owner: User, alpha: Team) -> Relocation:
    """A VM move whose saved plan holds a secret (sealed like an app's)."""
    return Relocation.objects.create(
        team=alpha,
        name="notes",
        address="10.50.0.19",
        offered_key="ssh-ed25519 AAAA",
        state=Relocation.State.PLANNED,
        created_by=owner,
        plan={"app_slug": "notes", "env": {}, "secrets": {"DB_PASSWORD": secret_env.seal(OTHER)}},
    )


def test_rotation_seals_everything_with_the_new_key_and_the_old_key_can_go(
    owner: User, ops: User, web: App, moved: Relocation
) -> None:
    registry = registry_settings.registry_save(
        user=ops, url="https://r.example:5000", username="pusher", password="registry-Pw-6d", enabled=False
    )
    hook = alerts.webhook_create(
        user=ops, team=None, name="lb", url="https://10.20.30.40/", topics=["alerts"]
    )
    signing = hook.secret_opened()
    old = settings.SECRETS_KEYS[0]
    new = Fernet.generate_key().decode()
    with override_settings(SECRETS_KEYS=[new, old]):
        out = io.StringIO()
        call_command("rotate_secrets", stdout=out)
        assert (
            "Sealed 2 secret value(s) again with the first key: 1 app(s), 1 release(s), 1 of VM moves' plans, "
            "1 of registry credentials, 1 of webhooks' signing secrets." in out.getvalue()
        )
    with override_settings(SECRETS_KEYS=[new]):
        web.refresh_from_db()
        assert secret_env.opened(web.secrets) == {"DB_PASSWORD": VALUE}
        assert secret_env.opened(web.releases.get().secrets) == {"DB_PASSWORD": VALUE}
        registry.refresh_from_db()
        assert registry_settings.access(registry).password == "registry-Pw-6d"
        moved.refresh_from_db()
        assert secret_env.opened(moved.plan["secrets"]) == {"DB_PASSWORD": OTHER}
        assert Webhook.objects.get(pk=hook.pk).secret_opened() == signing
    entry = AuditEntry.objects.get(action="secrets.rotate")
    assert entry.data["others"] == {
        "VM moves' plans": 1,
        "registry credentials": 1,
        "webhooks' signing secrets": 1,
    }


@pytest.mark.parametrize("unreadable", ["app", "registry", "plan", "webhook"])
def test_rotation_without_the_key_that_sealed_a_value_changes_nothing_and_says_why(
    ops: User, web: App, moved: Relocation, unreadable: str
) -> None:
    registry = registry_settings.registry_save(
        user=ops, url="https://r.example:5000", username="pusher", password="registry-Pw-6d", enabled=False
    )
    hook = alerts.webhook_create(
        user=ops, team=None, name="lb", url="https://10.20.30.40/", topics=["alerts"]
    )
    lost = Fernet(Fernet.generate_key())
    token = lost.encrypt(b"sealed-with-a-lost-key").decode()
    says = {
        "app": "The secret DB_PASSWORD cannot be opened",
        "registry": "The registry password cannot be opened",
        "plan": f"The secret of the move of notes (relocation {moved.pk}) DB_PASSWORD cannot be opened",
        "webhook": f"The signing secret of the webhook lb (id {hook.pk}) cannot be opened",
    }[unreadable]
    if unreadable == "app":
        Release.objects.filter(app=web).update(secrets={"DB_PASSWORD": token})
    elif unreadable == "registry":
        Registry.objects.filter(pk=1).update(password_sealed=token)
    elif unreadable == "webhook":
        Webhook.objects.filter(pk=hook.pk).update(secret_sealed=token)
    else:
        Relocation.objects.filter(pk=moved.pk).update(plan=moved.plan | {"secrets": {"DB_PASSWORD": token}})
    before = (
        App.objects.get(pk=web.pk).secrets,
        Registry.objects.get(pk=1).password_sealed,
        Relocation.objects.get(pk=moved.pk).plan,
        Webhook.objects.get(pk=hook.pk).secret_sealed,
    )
    new = Fernet.generate_key().decode()
    with (
        override_settings(SECRETS_KEYS=[new, *settings.SECRETS_KEYS]),
        pytest.raises(
            CommandError, match=re.escape(says) + " with any key in SECRETS_KEYS; nothing was rotated"
        ),
    ):
        call_command("rotate_secrets")
    after = (
        App.objects.get(pk=web.pk).secrets,
        Registry.objects.get(pk=1).password_sealed,
        Relocation.objects.get(pk=moved.pk).plan,
        Webhook.objects.get(pk=hook.pk).secret_sealed,
    )
    assert after == before and not AuditEntry.objects.filter(action="secrets.rotate").exists()
    assert registry.pk == 1


def test_a_new_key_is_printed_for_the_operator() -> None:
    out = io.StringIO()
    call_command("rotate_secrets", "--new-key", stdout=out)
    Fernet(out.getvalue().strip())


def test_a_bad_key_in_the_environment_stops_the_portal_with_what_is_allowed() -> None:
    code = "import django; django.setup()"
    env = {
        "SECRETS_KEYS": f"{Fernet.generate_key().decode()},not-a-key",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], env={**__import__("os").environ, **env}, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "SECRETS_KEYS: key 2 of 2 is not a Fernet key" in result.stderr


def test_the_model_refuses_a_plain_value_where_a_sealed_one_belongs(web: App) -> None:
    web.secrets = {"DB_PASSWORD": VALUE}
    with pytest.raises(ValidationError, match="sealed values only"):
        web.full_clean(exclude=["release"])
    release = Release.objects.get(app=web)
    release.full_clean()
    release.secrets = {"DB_PASSWORD": VALUE}
    with pytest.raises(ValidationError, match="sealed values only"):
        release.full_clean()


def test_a_release_row_keeps_only_sealed_values(owner: User, web: App) -> None:
    services.app_update(user=owner, app=web, secrets={"DB_PASSWORD": OTHER})
    assert OTHER not in _raw_rows() and VALUE not in _raw_rows()
    assert all(set(r.secrets) == {"DB_PASSWORD"} for r in Release.objects.filter(app=web))


def _report_of_a_crash(client: Client, url: str, form: dict[str, object]) -> str:
    """The error report Django mails the admins (DEBUG off) for a request that crashed."""
    reports: list[str] = []

    def report(sender: object, request: HttpRequest, **kwargs: object) -> None:
        reporter = ExceptionReporter(request, *sys.exc_info())
        reports.append(reporter.get_traceback_text() + reporter.get_traceback_html())

    got_request_exception.connect(report)
    try:
        with pytest.raises(RuntimeError, match="crashed"):
            client.post(url, form)
    finally:
        got_request_exception.disconnect(report)
    assert len(reports) == 1
    return reports[0]


def _crash(*args: object, **kwargs: object) -> None:
    raise RuntimeError("crashed")


@pytest.mark.parametrize("where", ["create", "edit", "plan", "registry"])
def test_an_error_report_of_a_form_that_takes_secrets_holds_none_of_them(
    owner: User, ops: User, web: App, moved: Relocation, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    from apps.relocations import services as moves

    client = Client()
    client.force_login(ops if where == "registry" else owner)
    if where == "create":
        monkeypatch.setattr(services, "app_create", _crash)
        url, form = "/apps/new/", {"slug": "crashy", "team": web.team_id, "base_image": web.base_image_id}
        form |= {"memory_mb": 64, "cpus": "0.25", "instances": 0}
        form |= {"new_secret_name_0": "TOKEN", "new_secret_value_0": OTHER}
    elif where == "edit":
        monkeypatch.setattr(services, "app_update", _crash)
        url, form = f"/apps/{web.slug}/edit/", {"base_image": web.base_image_id, "env": "MODE=a"}
        form |= {"health_check": "tcp", "health_path": "/", "health_timeout": 30}
        form |= {"secret_value__DB_PASSWORD": OTHER}
    elif where == "plan":
        monkeypatch.setattr(moves, "relocation_plan", _crash)
        url, form = f"/relocations/{moved.pk}/plan/", {"secret_value__DB_PASSWORD": OTHER, "port": "8080"}
    else:
        monkeypatch.setattr(registry_settings, "registry_save", _crash)
        url, form = "/images/registry/", {"url": "https://r.example:5000", "username": "u", "password": OTHER}
    text = _report_of_a_crash(client, url, form)
    assert "crashed" in text and "_crash" in text  # the report is there, with its frames
    assert OTHER not in text


def test_an_error_report_from_making_a_container_holds_no_secret(
    web: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The executor holds the opened spec while Docker makes the container; a crash there (a
    # worker's error report, DEBUG off) shows the frames but none of their variables.
    monkeypatch.setattr(gateway, "container_ensure", _crash)
    instance = Instance.objects.select_related("app", "host").get(app=web)
    try:
        executor._apply(instance, False, lambda _: None, AddressGate([]))
    except RuntimeError:
        reporter = ExceptionReporter(None, *sys.exc_info())
        text = reporter.get_traceback_text() + reporter.get_traceback_html()
    else:
        pytest.fail("the crash did not reach the caller")
    assert "crashed" in text and "_apply" in text and "spec" in text  # the report is there, with its frames
    assert VALUE not in text
