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
from django.db import connection
from django.test import Client, override_settings

from apps.accounts.models import Team
from apps.applications import releases, secret_env, services
from apps.applications.models import App, BaseImage, Release
from apps.instances.models import Instance, Operation
from apps.instances.spec import instance_spec
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
    # The same value again: nothing to deploy, no release.
    assert api.patch("/api/v1/apps/api-app/", {"secrets": {"TOKEN": OTHER}}, format="json").status_code == 200
    assert app.releases.count() == 2
    deleted = api.patch("/api/v1/apps/api-app/", {"secrets": {"API_KEY": None}}, format="json")
    assert deleted.status_code == 200 and deleted.json()["secrets"] == {"TOKEN": "********"}
    app.refresh_from_db()
    assert app.release is not None and app.release.changes == ["secret removed: API_KEY"]


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
    form = {
        "base_image": web.base_image_id,
        "env": "MODE=a\nLEVEL=3",
        "health_check": web.health_check,
        "health_path": web.health_path,
        "health_timeout": web.health_timeout,
        "secret_value__DB_PASSWORD": OTHER,
        "new_secret_name_0": "API_KEY",
        "new_secret_value_0": VALUE,
        "make_secret": ["MODE"],
    }
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
    form = {
        "base_image": web.base_image_id,
        "env": "MODE=a",
        "health_check": web.health_check,
        "health_path": web.health_path,
        "health_timeout": web.health_timeout,
        **fields,
    }
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


def test_rotation_seals_everything_with_the_new_key_and_the_old_key_can_go(owner: User, web: App) -> None:
    old = settings.SECRETS_KEYS[0]
    new = Fernet.generate_key().decode()
    with override_settings(SECRETS_KEYS=[new, old]):
        out = io.StringIO()
        call_command("rotate_secrets", stdout=out)
        assert "Sealed 2 secret value(s) again with the first key: 1 app(s), 1 release(s)" in out.getvalue()
    with override_settings(SECRETS_KEYS=[new]):
        web.refresh_from_db()
        assert secret_env.opened(web.secrets) == {"DB_PASSWORD": VALUE}
        assert secret_env.opened(web.releases.get().secrets) == {"DB_PASSWORD": VALUE}


def test_rotation_without_the_key_that_sealed_a_value_changes_nothing_and_says_why(web: App) -> None:
    before = App.objects.get(pk=web.pk).secrets
    with (
        override_settings(SECRETS_KEYS=[Fernet.generate_key().decode()]),
        pytest.raises(CommandError, match="DB_PASSWORD cannot be opened with any key"),
    ):
        call_command("rotate_secrets")
    assert App.objects.get(pk=web.pk).secrets == before


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


def test_a_release_row_keeps_only_sealed_values(owner: User, web: App) -> None:
    services.app_update(user=owner, app=web, secrets={"DB_PASSWORD": OTHER})
    assert OTHER not in _raw_rows() and VALUE not in _raw_rows()
    assert all(set(r.secrets) == {"DB_PASSWORD"} for r in Release.objects.filter(app=web))
