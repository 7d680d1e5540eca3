"""Secrets in a VM move's plan: the names that look secret are marked secret (the inspection
never copies their values), the owner types the values, which are sealed in the plan like an
app's and shown masked everywhere (the wizard, the API, the admin, the audit trail), and the app
the move makes gets them as secrets. The owner can make one plain, or mark a plain one secret.
No SSH: the report is the shape the inspection produces."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client
from django.urls import reverse

from apps.accounts.models import Team
from apps.applications import releases, secret_env
from apps.applications.models import App, BaseImage
from apps.audit.models import AuditEntry
from apps.hosts.models import Host
from apps.network.models import IPPool
from apps.relocations import runner, services
from apps.relocations.models import Inspection, Relocation
from tests.helpers import api_client
from tests.plain.test_relocation_plan import REPORT

VALUE = "vm-Secret-Value-3b9d"
URL = "postgres://notes:url-Secret-77e2@db/notes"
REPORT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVzZWQgb25seSBpbiB0ZXN0cyBrZXkga2V5IGtleQ=="


@pytest.fixture
def relocation(owner: User, alpha: Team, hosts: list[Host]) -> Relocation:
    pool = IPPool.objects.create(
        name="public",
        network="10.50.0.0/24",
        gateway="10.50.0.1",
        range_start="10.50.0.10",
        range_end="10.50.0.30",
    )
    pool.hosts.set(hosts)
    image = BaseImage.objects.create(name="slipway/debian-python", tag="1", runtime="python")
    image.hosts.set(hosts)
    relocation = Relocation.objects.create(
        team=alpha,
        name="notes",
        address="10.50.0.19",
        offered_key=REPORT_KEY,
        host_key=REPORT_KEY,
        state=Relocation.State.INSPECTED,
        created_by=owner,
    )
    # The inspection masked the password inside the URL as well as DB_PASSWORD's whole value.
    report = json.loads(json.dumps(REPORT))
    report["env"]["DATABASE_URL"] = "postgres://notes:********@db/notes"
    Inspection.objects.create(relocation=relocation, report=report)
    return relocation


def _typed(relocation: Relocation, **secrets: Any) -> dict[str, Any]:
    plan = services.plan_suggestion(relocation)
    plan["secrets"] = {"DB_PASSWORD": VALUE, "DATABASE_URL": URL} | secrets
    return plan


def _raw_relocations() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM relocations_relocation")
        return repr(cursor.fetchall())


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_names_that_look_secret_are_suggested_as_secrets_whose_values_are_to_type(
    relocation: Relocation,
) -> None:
    plan = services.plan_suggestion(relocation)
    assert plan["env"] == {"NOTES_TITLE": "Ops notes"}
    assert plan["secrets"] == {"DATABASE_URL": "********", "DB_PASSWORD": "********"}
    with pytest.raises(ValidationError) as refused:
        services.relocation_plan(user=relocation.created_by, relocation=relocation, plan=plan)
    assert refused.value.message_dict["secrets"] == [
        "Type the values of DATABASE_URL, DB_PASSWORD: the inspection does not copy secrets. "
        "Leave out the ones the app does not need."
    ]


def test_typed_values_are_sealed_in_the_plan_and_shown_masked_everywhere(
    relocation: Relocation, owner: User, ops: User
) -> None:
    saved = services.relocation_plan(user=owner, relocation=relocation, plan=_typed(relocation))
    assert secret_env.opened(saved.plan["secrets"]) == {"DB_PASSWORD": VALUE, "DATABASE_URL": URL}
    assert VALUE not in _raw_relocations() and "url-Secret" not in _raw_relocations()
    entry = AuditEntry.objects.get(action="relocation.plan")
    assert entry.data["secret_names"] == ["DATABASE_URL", "DB_PASSWORD"]

    api = api_client(owner)
    base = f"/api/v1/relocations/{relocation.pk}/"
    plan = api.get(base + "plan/").json()["plan"]
    assert plan["secrets"] == {"DATABASE_URL": "********", "DB_PASSWORD": "********"}
    assert api.get(base).json()["plan"]["secrets"] == plan["secrets"]
    page = _client(owner).get(reverse("relocations:detail", args=[relocation.pk])).content.decode()
    assert 'data-secret="DB_PASSWORD"' in page and "saved: ********" in page
    User.objects.filter(pk=ops.pk).update(is_superuser=True)
    admin = _client(ops).get(f"/admin/relocations/relocation/{relocation.pk}/change/").content.decode()
    assert "DB_PASSWORD" in admin and "********" in admin
    answers = [
        json.dumps(plan),
        api.get(base).content.decode(),
        api.get("/api/v1/relocations/").content.decode(),
        page,
        admin,
        api_client(ops).get("/api/v1/audit/").content.decode(),
    ]
    for text in answers:
        assert VALUE not in text and "url-Secret" not in text
        assert saved.plan["secrets"]["DB_PASSWORD"] not in text  # not even the sealed token

    # Sent back as it was read (masked), the plan keeps the saved values; a value typed replaces.
    again = api.put(base + "plan/", {"plan": plan}, format="json")
    assert again.status_code == 200, again.content
    relocation.refresh_from_db()
    assert secret_env.opened(relocation.plan["secrets"]) == {"DB_PASSWORD": VALUE, "DATABASE_URL": URL}
    plan["secrets"]["DB_PASSWORD"] = "replaced"
    assert api.put(base + "plan/", {"plan": plan}, format="json").status_code == 200
    relocation.refresh_from_db()
    assert secret_env.opened(relocation.plan["secrets"])["DB_PASSWORD"] == "replaced"


def test_the_owner_can_make_a_suggested_secret_plain_or_leave_it_out(
    relocation: Relocation, owner: User
) -> None:
    api = api_client(owner)
    plan = api.get(f"/api/v1/relocations/{relocation.pk}/plan/").json()["plan"]
    plan["env"]["DATABASE_URL"] = URL  # plain, by the owner's choice
    plan["secrets"] = {"DB_PASSWORD": VALUE}  # the URL moved; nothing else is left out
    saved = api.put(f"/api/v1/relocations/{relocation.pk}/plan/", {"plan": plan}, format="json")
    assert saved.status_code == 200, saved.content
    relocation.refresh_from_db()
    assert relocation.plan["env"]["DATABASE_URL"] == URL
    assert list(relocation.plan["secrets"]) == ["DB_PASSWORD"]


@pytest.mark.parametrize(
    ("secrets", "env", "message"),
    [
        ({"DB_PASSWORD": "********"}, {}, "Type the values of DB_PASSWORD"),
        ({"DB_PASSWORD": VALUE}, {"DB_PASSWORD": "x"}, "DB_PASSWORD is both a plain variable and a secret"),
        ({"DB_PASSWORD": 5}, {}, "The value of DB_PASSWORD must be a string"),
        (["DB_PASSWORD"], {}, 'Secrets are an object of NAME: "value" pairs'),
        ({"9BAD": VALUE}, {}, "Secret name '9BAD' is not allowed"),
        ({"SLIPWAY_X": VALUE}, {}, "are set by Slipway"),
        ({"DB_PASSWORD": "a\x00b"}, {}, "contains a NUL byte"),
    ],
)
def test_bad_secrets_in_a_plan_are_refused_with_what_is_allowed(
    relocation: Relocation, owner: User, secrets: Any, env: dict[str, str], message: str
) -> None:
    plan = services.plan_suggestion(relocation)
    plan["secrets"] = secrets
    plan["env"] = plan["env"] | env
    answer = api_client(owner).put(
        f"/api/v1/relocations/{relocation.pk}/plan/", {"plan": plan}, format="json"
    )
    assert answer.status_code == 400, answer.content
    assert message in str(answer.json())
    relocation.refresh_from_db()
    assert relocation.plan == {}


def test_the_wizard_takes_secret_values_marks_plain_ones_and_leaves_some_out(
    relocation: Relocation, owner: User
) -> None:
    client = _client(owner)
    page = client.get(reverse("relocations:detail", args=[relocation.pk])).content.decode()
    for name in ("DB_PASSWORD", "DATABASE_URL"):
        assert f'data-secret="{name}"' in page
        assert re.search(rf'<input type="password" name="secret_value__{name}"', page)
    plan = services.plan_suggestion(relocation)
    form = {
        "app_slug": plan["app_slug"],
        "base_image": plan["base_image"],
        "app_dir": plan["app_dir"],
        "command": "\n".join(plan["command"]),
        "env": "NOTES_TITLE=Ops notes\nLEVEL=debug-Value-e1",
        "port": plan["port"],
        "memory_mb": plan["memory_mb"],
        "cpus": plan["cpus"],
        "keep_address": plan["keep_address"],
        "stop_command": "\n".join(plan["stop_command"]),
        "start_command": "\n".join(plan["start_command"]),
        "secret_value__DB_PASSWORD": VALUE,
        "secret_delete__DATABASE_URL": "on",
        "new_secret_name_0": "API_TOKEN",
        "new_secret_value_0": "token-Value-5a",
        "make_secret": ["NOTES_TITLE"],
    }
    url = reverse("relocations:plan", args=[relocation.pk])
    # The form offers to mark the suggested plain variables only: LEVEL was typed just now.
    refused = client.post(url, form | {"make_secret": ["LEVEL"]})
    assert refused.status_code == 400
    assert "Select a valid choice. LEVEL is not one of the available choices." in refused.content.decode()
    saved = client.post(url, form)
    assert saved.status_code == 302, re.findall(r'role="alert">([^<]*)', saved.content.decode())
    relocation.refresh_from_db()
    assert relocation.plan["env"] == {"LEVEL": "debug-Value-e1"}
    assert secret_env.opened(relocation.plan["secrets"]) == {
        "DB_PASSWORD": VALUE,
        "API_TOKEN": "token-Value-5a",
        "NOTES_TITLE": "Ops notes",
    }
    page = client.get(reverse("relocations:detail", args=[relocation.pk])).content.decode()
    assert VALUE not in page and "token-Value-5a" not in page
    assert page.count("saved: ********") == 3

    # Saved again with the rows left empty: the saved values stay.
    form = form | {"env": "LEVEL=debug-Value-e1", "make_secret": []}
    form |= {"secret_value__DB_PASSWORD": "", "new_secret_name_0": "", "new_secret_value_0": ""}
    form.pop("secret_delete__DATABASE_URL")
    assert client.post(url, form).status_code == 302
    relocation.refresh_from_db()
    assert secret_env.opened(relocation.plan["secrets"])["DB_PASSWORD"] == VALUE


def test_a_secret_left_empty_is_asked_for_next_to_the_secrets(relocation: Relocation, owner: User) -> None:
    plan = services.plan_suggestion(relocation)
    form = {
        "app_slug": plan["app_slug"],
        "base_image": plan["base_image"],
        "app_dir": plan["app_dir"],
        "env": "NOTES_TITLE=Ops notes",
        "port": plan["port"],
        "memory_mb": plan["memory_mb"],
        "cpus": plan["cpus"],
        "stop_command": "\n".join(plan["stop_command"]),
        "start_command": "\n".join(plan["start_command"]),
        "secret_value__DB_PASSWORD": VALUE,
    }
    answer = _client(owner).post(reverse("relocations:plan", args=[relocation.pk]), form)
    assert answer.status_code == 400
    fieldset = re.search(
        r'<fieldset class="secrets" id="secrets">(.*?)</fieldset>', answer.content.decode(), re.S
    )
    assert (
        fieldset and "Type the values of DATABASE_URL: the inspection does not copy secrets." in fieldset[1]
    )
    assert VALUE not in answer.content.decode()  # a typed value is never rendered back


def test_the_app_the_move_makes_gets_the_secrets_sealed_and_so_does_its_first_release(
    relocation: Relocation, owner: User
) -> None:
    saved = services.relocation_plan(user=owner, relocation=relocation, plan=_typed(relocation))
    app = runner._ensure_app(runner.Context(relocation=saved, plan=saved.plan))
    assert app.env == {"NOTES_TITLE": "Ops notes"}
    assert secret_env.opened(app.secrets) == {"DB_PASSWORD": VALUE, "DATABASE_URL": URL}
    release = releases.release_moved_in(app=app, host=Host.objects.first())  # type: ignore[arg-type]
    assert secret_env.opened(release.secrets) == {"DB_PASSWORD": VALUE, "DATABASE_URL": URL}
    assert "DB_PASSWORD" not in release.env
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM catalog_app")
        rows = repr(cursor.fetchall())
        cursor.execute("SELECT * FROM catalog_release")
        rows += repr(cursor.fetchall())
    assert VALUE not in rows and "url-Secret" not in rows
    assert App.objects.get(pk=app.pk).secrets == saved.plan["secrets"]
