"""One audit trail: each change is one row saying who, when, what, on which object and from where
(page, API, CLI, admin, worker); ops search and filter it on one page and export it as CSV or
JSON; nobody else sees it; no row holds a secret's value."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings

from apps.accounts import grants, tokens
from apps.accounts.models import Team
from apps.applications import services
from apps.applications.models import App, BaseImage
from apps.audit import services as audit
from apps.audit.context import Origin, acting, client_address, request_source
from apps.audit.models import AuditEntry
from apps.hosts.models import Host, HostEvent
from apps.instances.models import Instance
from portal.signin import GroupMap

SECRET = "do-not-log-me-7731"


@pytest.fixture
def web(owner: User, alpha: Team, image: BaseImage) -> App:
    return services.app_create(
        user=owner, team=alpha, slug="web", base_image=image, secrets={"DB_PASSWORD": SECRET}
    )


def _rows(**filters: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(**filters).order_by("id"))


def test_creating_an_app_is_one_row_naming_its_secrets_never_their_values(owner: User, web: App) -> None:
    [row] = _rows(action="app.create")
    assert (row.actor, row.actor_name, row.object_type, row.object_id, row.object_repr) == (
        owner,
        "owner",
        "app",
        str(web.pk),
        "web",
    )
    assert row.team_slug == "alpha" and row.source == "system"  # made here, outside a request
    assert row.data["secret_names"] == ["DB_PASSWORD"]
    assert SECRET not in json.dumps([r.data for r in AuditEntry.objects.all()])
    assert AuditEntry.objects.count() == 1  # release 1 is part of the creation, not a row of its own


def test_each_operation_is_one_row_from_where_it_was_asked(owner: User, web: App, hosts: object) -> None:
    client = Client()
    client.force_login(owner)
    assert client.post(f"/apps/{web.slug}/scale/", {"instances": 2}).status_code == 302
    [scale] = _rows(action="app.scale")
    assert (scale.source, scale.address, scale.summary) == ("page", "127.0.0.1", scale.summary)
    assert scale.summary.startswith("scale 0 → 2") and scale.data["params"]["to"] == 2
    instance = Instance.objects.filter(app=web).first()
    assert instance is not None
    api = Client(HTTP_USER_AGENT="slipway-cli/1.0")
    api.force_login(owner)
    assert api.post(f"/api/v1/instances/{instance.pk}/stop/").status_code == 202
    [stop] = _rows(action="app.stop")
    assert (stop.source, stop.object_type, stop.object_repr) == ("cli", "instance", str(instance))
    plain = Client()
    plain.force_login(owner)
    assert plain.post(f"/api/v1/instances/{instance.pk}/start/").status_code == 202
    assert _rows(action="app.start")[0].source == "api"


def test_a_release_without_instances_is_a_row_of_its_own(owner: User, web: App) -> None:
    services.app_update(user=owner, app=web, secrets={"DB_PASSWORD": "x" + SECRET}, note="rotate")
    [row] = _rows(action="app.release")
    assert row.summary == "release 2 of web: secret changed: DB_PASSWORD"
    assert SECRET not in row.summary


def test_a_value_that_may_be_secret_is_refused_before_it_is_written(owner: User) -> None:
    with pytest.raises(ValueError, match=r"data\.env\.password: an audit row never holds"):
        audit.record("x.y", "test", data={"env": {"password": "x"}})
    assert not AuditEntry.objects.exists()


def test_the_admin_s_changes_are_rows_from_the_admin(ops: User, alpha: Team) -> None:
    ops.is_superuser = True  # the admin's change form needs the model's permission
    ops.save()
    client = Client()
    client.force_login(ops)
    answer = client.post(
        f"/admin/accounts/team/{alpha.pk}/change/",
        {
            "slug": "alpha",
            "name": "Alpha squad",
            "auto_approve_memory_mb": 0,
            "auto_approve_cpus": "0",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
        },
    )
    assert answer.status_code == 302, answer.content.decode()[:500]
    [row] = _rows(action="admin.change")
    assert (row.actor_name, row.source, row.object_repr) == ("ops", "admin", "Alpha squad")


@pytest.mark.parametrize(
    ("path", "agent", "source"),
    [
        ("/apps/web/", "Mozilla/5.0", "page"),
        ("/api/v1/apps/", "curl/8", "api"),
        ("/api/v1/apps/", "slipway-cli/0.3", "cli"),
        ("/admin/accounts/team/", "Mozilla/5.0", "admin"),
    ],
)
def test_where_a_request_comes_from(path: str, agent: str, source: str) -> None:
    assert request_source(path, agent) == source


def test_the_clients_address_is_the_proxy_s_last_hop_only_when_told_to_trust_it() -> None:
    meta = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 10.1.2.3"}
    assert client_address(meta) == "127.0.0.1"
    with override_settings(USE_X_FORWARDED_FOR=True):
        assert client_address(meta) == "10.1.2.3"
        assert client_address({"REMOTE_ADDR": "127.0.0.1"}) == "127.0.0.1"


def test_the_reconcile_says_it_was_the_reconcile(web: App) -> None:
    with acting("reconcile") as origin:
        assert origin == Origin("reconcile")
        audit.record("app.restart", "restart after a crash", obj=web)
    row = _rows(action="app.restart")[0]
    assert (row.source, row.actor, row.actor_name) == ("reconcile", None, "")


@pytest.fixture
def trail(owner: User, lead: User, web: App, alpha: Team, beta: Team) -> None:
    audit.record(
        "host.drain", "drain lab-h1", actor=lead, object_type="host", object_id=1, object_repr="lab-h1"
    )
    audit.record("app.scale", "scale 1 → 3", actor=owner, obj=web)
    audit.record("token.create", "token ci", actor=owner, object_type="API token", team=beta)
    with acting("reconcile"):
        audit.record("app.restart", "restart slw-web-0 after it died", obj=web)


@pytest.mark.parametrize(
    ("query", "actions"),
    [
        ({}, ["app.restart", "token.create", "app.scale", "host.drain", "app.create"]),
        ({"action": "app"}, ["app.restart", "app.scale", "app.create"]),
        ({"action": "app.scale"}, ["app.scale"]),
        ({"actor": "lead"}, ["host.drain"]),
        ({"actor": "-"}, ["app.restart"]),
        ({"source": "reconcile"}, ["app.restart"]),
        ({"team": "beta"}, ["token.create"]),
        ({"object_type": "host"}, ["host.drain"]),
        ({"q": "DIED"}, ["app.restart"]),
        ({"q": "lab-h1"}, ["host.drain"]),
        (
            {"since": "2000-01-01", "until": "2999-12-31"},
            ["app.restart", "token.create", "app.scale", "host.drain", "app.create"],
        ),
        ({"until": "2000-01-01"}, []),
    ],
)
def test_ops_filter_the_trail_on_the_page_and_the_api(
    ops: User, trail: None, query: dict[str, str], actions: list[str]
) -> None:
    client = Client()
    client.force_login(ops)
    page = client.get("/audit/", query, HTTP_HX_REQUEST="true")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<html" not in html  # htmx gets the rows only
    assert [a for a in actions] == [line.split('"')[0] for line in html.split('data-action="')[1:]]
    api = client.get("/api/v1/audit/", query).json()
    assert [r["action"] for r in api["results"]] == actions


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"since": "yesterday"}, "'yesterday' is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM."),
        (
            {"source": "fax"},
            "'fax' is not a source; one of: page, api, cli, admin, worker, reconcile, system.",
        ),
        ({"since": "2026-02-02", "until": "2026-02-01"}, "The end is before the start."),
        ({"q": "a\x00b"}, "A filter never holds a NUL character."),
    ],
)
def test_bad_filters_say_what_they_take(ops: User, trail: None, query: dict[str, str], message: str) -> None:
    client = Client()
    client.force_login(ops)
    page = client.get("/audit/", query)
    assert page.status_code == 422 and message in page.content.decode().replace("&#x27;", "'")
    api = client.get("/api/v1/audit/", query)
    assert api.status_code == 400 and message in str(api.json())
    export = client.get("/audit/export.csv", query)
    assert export.status_code == 400 and message in str(export.json())


def test_the_export_has_the_filtered_rows_oldest_first_as_csv_and_json(ops: User, trail: None) -> None:
    client = Client()
    client.force_login(ops)
    answer = client.get("/audit/export.csv", {"action": "app"})
    assert answer["Content-Disposition"] == 'attachment; filename="slipway-audit.csv"'
    rows = list(csv.DictReader(io.StringIO(b"".join(answer.streaming_content).decode())))  # type: ignore[attr-defined]
    assert [r["action"] for r in rows] == ["app.create", "app.scale", "app.restart"]
    assert rows[1]["actor"] == "owner" and rows[2]["source"] == "reconcile" and rows[2]["actor"] == ""
    data = json.loads(b"".join(client.get("/audit/export.json", {"q": "drain"}).streaming_content))  # type: ignore[attr-defined]
    assert [(r["action"], r["object_repr"], r["actor"]) for r in data] == [("host.drain", "lab-h1", "lead")]
    assert client.get("/audit/export.xml").status_code == 404


def test_the_page_shows_older_rows_a_hundred_at_a_time(ops: User, web: App) -> None:
    for n in range(120):
        audit.record("app.scale", f"scale number {n}", obj=web)
    client = Client()
    client.force_login(ops)
    first = client.get("/audit/").content.decode()
    assert first.count('data-action="') == 100 and "scale number 119" in first and "Older changes" in first
    older = first.split('href="?')[1].split('"')[0].replace("&amp;", "&")
    second = client.get("/audit/?" + older).content.decode()
    assert (
        second.count('data-action="') == 21 and "scale number 0" in second and "Older changes" not in second
    )


@pytest.mark.parametrize("who", ["owner", "lead", "outsider"])
def test_only_ops_see_the_trail(request: pytest.FixtureRequest, who: str, trail: None) -> None:
    client = Client()
    client.force_login(request.getfixturevalue(who))
    assert client.get("/audit/").status_code == 302
    assert client.get("/audit/export.csv").status_code == 302
    assert client.get("/api/v1/audit/").status_code == 403


def test_token_changes_and_directory_grants_are_rows(owner: User, alpha: Team) -> None:
    made = tokens.api_token_create(user=owner, name="ci", scope="read", expires_at=tokens.expires_after(7))
    tokens.api_token_revoke(user=owner, token=made.token)
    created, revoked = _rows(action="token.create")[0], _rows(action="token.revoke")[0]
    assert created.object_repr == revoked.object_repr == f"owner: ci ({made.token.prefix}…)"
    assert made.key not in created.summary + created.object_repr + json.dumps(created.data)
    mapping = GroupMap(ops=frozenset(), teams=(("leads", "alpha", "lead"),))
    grants.grants_apply(user=owner, groups={"leads"}, mapping=mapping, via="LDAP")
    [grant] = _rows(action="user.grants")
    assert grant.summary == "owner through LDAP: lead of alpha"


def test_a_host_event_is_a_row_about_its_host(ops: User, hosts: list[Host]) -> None:
    HostEvent.objects.create(host=hosts[0], user=ops, action="checks overridden", detail="disk is fine")
    [row] = _rows(action="host.checks-overridden")
    assert (row.actor_name, row.object_type, row.object_repr) == ("ops", "host", str(hosts[0]))
    assert row.summary == f"checks overridden on {hosts[0].name}: disk is fine"
