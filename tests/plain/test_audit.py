"""One audit trail: each change is one row saying who, when, what, on which object and from where
(page, API, CLI, admin, worker); ops search and filter it on one page and export it as CSV or
JSON; nobody else sees it; no row holds a secret's value."""

from __future__ import annotations

import csv
import io
import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext

from apps.accounts import grants, tokens
from apps.accounts.models import Team
from apps.alerts import services as alerts
from apps.alerts.models import Kind
from apps.applications import services
from apps.applications.models import App, BaseImage, BuildState, RetainedVolume
from apps.audit import services as audit
from apps.audit.context import Origin, acting, client_address, request_source
from apps.audit.models import AuditEntry
from apps.console import services as console
from apps.hosts.models import Host, HostEvent
from apps.images import publish
from apps.instances import executor, retention
from apps.instances.models import Instance, Operation
from apps.network import services as network
from apps.network.models import IPAllocation, IPPool
from apps.resources import apply
from apps.resources import services as resources
from portal.asgi import application
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
        # The last: ops signing in to look.
        ({}, ["user.sign-in", "app.restart", "token.create", "app.scale", "host.drain", "app.create"]),
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
            ["user.sign-in", "app.restart", "token.create", "app.scale", "host.drain", "app.create"],
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
    # 120 + the app's creation + ops signing in to look.
    assert (
        second.count('data-action="') == 22 and "scale number 0" in second and "Older changes" not in second
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


# --- the export as a spreadsheet reads it ----------------------------------------------------------


def test_the_csv_export_keeps_formulas_as_text(ops: User, web: App) -> None:
    for name in ('=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"):
        audit.record("app.rename", f"{name} summary", obj=web, object_repr=name)
    client = Client()
    client.force_login(ops)
    answer = client.get("/audit/export.csv", {"action": "app.rename"})
    rows = list(csv.DictReader(io.StringIO(b"".join(answer.streaming_content).decode())))  # type: ignore[attr-defined]
    assert [r["object_repr"] for r in rows] == [
        '\'=HYPERLINK("http://evil.example","x")',
        "'+1+1",
        "'-2+3",
        "'@SUM(A1)",
        "'\tx",
        "'\rx",
    ]
    assert all(r["summary"].startswith("'") for r in rows)
    assert rows[0]["action"] == "app.rename" and rows[0]["team"] == "alpha"  # plain cells stay as they are
    # JSON is data, not a sheet: the names are as they were.
    data = json.loads(b"".join(client.get("/audit/export.json", {"action": "app.rename"}).streaming_content))  # type: ignore[attr-defined]
    assert data[0]["object_repr"].startswith("=HYPERLINK(")


# --- sign-ins ----------------------------------------------------------------------------------------


def test_signing_in_and_out_and_failing_to_are_rows_from_the_page(owner: User) -> None:
    client = Client()
    assert client.post("/login/", {"username": "owner", "password": "wrong"}).status_code == 200
    [failed] = _rows(action="user.sign-in-failed")
    assert (failed.actor, failed.source, failed.address, failed.object_repr) == (
        None,
        "page",
        "127.0.0.1",
        "owner",
    )
    assert "wrong" not in failed.summary + json.dumps(failed.data)
    assert client.post("/login/", {"username": "owner", "password": "pw-owner"}).status_code == 302
    [signed_in] = _rows(action="user.sign-in")
    assert (signed_in.actor, signed_in.source, signed_in.object_type, signed_in.object_repr) == (
        owner,
        "page",
        "user",
        "owner",
    )
    assert client.post("/logout/").status_code == 302
    [signed_out] = _rows(action="user.sign-out")
    assert (signed_out.actor_name, signed_out.source) == ("owner", "page")


# --- the admin -----------------------------------------------------------------------------------------


@pytest.fixture
def superuser(ops: User) -> Client:
    ops.is_superuser = True  # the admin's actions need the model's permissions
    ops.save()
    client = Client()
    client.force_login(ops)
    return client


def test_a_bulk_delete_in_the_admin_is_a_row_per_object(superuser: Client) -> None:
    teams = [Team.objects.create(slug=f"gone{n}", name=f"Gone {n}") for n in (1, 2)]
    answer = superuser.post(
        "/admin/accounts/team/",
        {"action": "delete_selected", "_selected_action": [t.pk for t in teams], "post": "yes"},
    )
    assert answer.status_code == 302 and not Team.objects.filter(slug__startswith="gone").exists()
    rows = _rows(action="admin.delete")
    assert sorted((r.object_repr, r.object_id, r.actor_name, r.source) for r in rows) == [
        ("Gone 1", str(teams[0].pk), "ops", "admin"),
        ("Gone 2", str(teams[1].pk), "ops", "admin"),
    ]


def test_admin_actions_that_write_directly_are_rows(
    superuser: Client, image: BaseImage, hosts: list[Host]
) -> None:
    # Nothing answers on the hosts' ports: the probe marks them unreachable, the check finds no image.
    answer = superuser.post("/admin/hosts/host/", {"action": "probe", "_selected_action": [hosts[0].pk]})
    assert answer.status_code == 302
    [probed] = _rows(action="admin.change", object_type="host")
    assert (probed.object_repr, probed.actor_name, probed.source) == ("h1", "ops", "admin")
    assert probed.summary.startswith("change host h1: Probed: unreachable")
    answer = superuser.post(
        "/admin/catalog/baseimage/", {"action": "refresh_hosts", "_selected_action": [image.pk]}
    )
    assert answer.status_code == 302
    [checked] = _rows(action="admin.change", object_type="base image")
    assert checked.summary == f"change baseimage {image}: Checked which hosts have it: h1, h2."


def test_a_purge_says_who_asked(ops: User, hosts: list[Host], alpha: Team) -> None:
    volume = RetainedVolume.objects.create(
        host=hosts[0],
        app_slug="gone",
        path="/elsewhere/gone",
        team=alpha,
        reason=RetainedVolume.Reason.DELETED,
    )
    client = Client()
    client.force_login(ops)
    answer = client.post(f"/hosts/{hosts[0].pk}/volumes/{volume.pk}/purge/")
    assert answer.status_code == 422  # refused: the path is not under the host's volume root
    [row] = _rows(action="volume.purge")
    assert (row.actor_name, row.source) == ("ops", "page") and "Refused" in row.summary


# --- addresses ---------------------------------------------------------------------------------------


@pytest.fixture
def pool(hosts: list[Host]) -> IPPool:
    pool = IPPool.objects.create(
        name="public",
        network="10.50.0.0/24",
        gateway="10.50.0.1",
        range_start="10.50.0.10",
        range_end="10.50.0.40",
    )
    pool.hosts.set(hosts)
    return pool


@pytest.fixture
def pooled(owner: User, alpha: Team, image: BaseImage, pool: IPPool) -> App:
    return services.app_create(user=owner, team=alpha, slug="pooled", base_image=image)


def _addresses() -> list[tuple[str, str, str, str]]:
    return [(r.action, r.object_repr, r.actor_name, r.source) for r in _rows(action__startswith="address.")]


def test_addresses_allocated_reserved_and_released_are_rows_with_who_and_from_where(
    owner: User, pooled: App
) -> None:
    client = Client()
    client.force_login(owner)
    assert client.post(f"/apps/{pooled.slug}/scale/", {"instances": 2}).status_code == 302
    network.address_request(user=owner, app=pooled, address="10.50.0.30", slot=5)
    assert _addresses() == [
        ("address.allocate", "10.50.0.10", "owner", "page"),
        ("address.allocate", "10.50.0.11", "owner", "page"),
        ("address.reserve", "10.50.0.30", "owner", "system"),
    ]
    first = _rows(action="address.allocate")[0]
    assert first.team_slug == "alpha" and first.object_type == "address"
    assert first.data == {"pool": "public", "app": "pooled", "slot": 0}
    assert first.summary == "allocate 10.50.0.10 for slot 0 of pooled"
    AuditEntry.objects.all().delete()
    # The worker removes slot 1's container: its address goes, as a row of the portal's.
    instance = Instance.objects.get(app=pooled, slot=1)
    with acting("worker"):
        executor._record(executor.Outcome(instance, removed=True))
    assert _addresses() == [("address.release", "10.50.0.11", "", "worker")]
    assert _rows(action="address.release")[0].summary == (
        "release 10.50.0.11 of slot 1 of pooled: slw-pooled-1 is gone"
    )
    assert not IPAllocation.objects.filter(address="10.50.0.11").exists()


def test_releasing_many_addresses_writes_their_rows_in_one_statement(owner: User, pooled: App) -> None:
    services.app_scale(user=owner, app=pooled, instances=12)
    AuditEntry.objects.all().delete()
    with CaptureQueriesContext(connection) as queries:
        released = network.address_release(app=pooled)
    assert len(released) == 12 and AuditEntry.objects.filter(action="address.release").count() == 12
    inserts = [
        q["sql"] for q in queries.captured_queries if q["sql"].startswith('INSERT INTO "audit_auditentry"')
    ]
    assert len(inserts) == 1
    work = [q for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    # Read, write the rows, delete (the delete reads the rows again for what refers to them).
    assert len(work) <= 5, work


def test_the_reconcile_s_holds_and_releases_are_its_rows_and_ops_release_in_the_admin(
    superuser: Client, pool: IPPool
) -> None:
    with acting("reconcile"):
        held = network.address_hold_foreign(pool=pool, address="10.50.0.20", held_by="container x on h1")
        # Seen again, held by the same or another: no new row (nothing changed hands).
        network.address_hold_foreign(pool=pool, address="10.50.0.20", held_by="answers ARP from aa:bb")
        other = network.address_hold_foreign(pool=pool, address="10.50.0.21", held_by="container y on h2")
        assert held is not None and other is not None
        network.address_release_foreign(allocations=[other], why="nothing answers for it")
    assert _addresses() == [
        ("address.hold", "10.50.0.20", "", "reconcile"),
        ("address.hold", "10.50.0.21", "", "reconcile"),
        ("address.release", "10.50.0.21", "", "reconcile"),
    ]
    assert (
        _rows(action="address.hold")[0].summary
        == "hold 10.50.0.20, in use outside Slipway (container x on h1)"
    )
    answer = superuser.post(
        "/admin/network/ipallocation/", {"action": "release_foreign", "_selected_action": [held.pk]}
    )
    assert answer.status_code == 302 and not IPAllocation.objects.exists()
    assert _addresses()[-1] == ("address.release", "10.50.0.20", "ops", "admin")


def test_a_vm_s_address_held_moved_to_the_app_and_back_is_a_row_each(
    owner: User, pooled: App, pool: IPPool
) -> None:
    services.app_scale(user=owner, app=pooled, instances=1)  # slot 0 gets 10.50.0.10
    AuditEntry.objects.all().delete()
    kept = network.address_hold(
        pool=pool, address="10.50.0.35", held_by="VM notes (moving to Slipway)", user=owner
    )
    with acting("worker"):
        network.address_move(allocation=kept, app=pooled, slot=0, why="cutover of VM notes")
        network.address_move(allocation=kept, app=pooled, slot=0)  # sent again: done already
        network.address_unassign(allocation=kept, held_by="VM notes (moving to Slipway)", why="rollback")
        network.address_unassign(allocation=kept, held_by="VM notes (moving to Slipway)")  # again: held
    assert _addresses() == [
        ("address.hold", "10.50.0.35", "owner", "system"),
        ("address.release", "10.50.0.10", "", "worker"),
        ("address.move", "10.50.0.35", "", "worker"),
        ("address.move", "10.50.0.35", "", "worker"),
    ]
    moved, back = _rows(action="address.move")
    assert moved.summary == (
        "move 10.50.0.35 from the hold for VM notes (moving to Slipway) to slot 0 of pooled: cutover of VM notes"
    )
    assert (
        back.summary
        == "move 10.50.0.35 from slot 0 of pooled to a hold for VM notes (moving to Slipway): rollback"
    )
    assert back.team_slug == "alpha" and back.data["app"] == "pooled"


def test_an_address_found_taken_is_held_and_the_slot_gets_another(owner: User, pooled: App) -> None:
    services.app_scale(user=owner, app=pooled, instances=1)
    AuditEntry.objects.all().delete()
    with acting("worker"):
        replacement = network.address_replace_taken(
            allocation=IPAllocation.objects.select_related("app", "pool").get(app=pooled),
            held_by="answers ARP from aa:bb",
        )
    assert replacement.address == "10.50.0.11"
    assert _addresses() == [
        ("address.hold", "10.50.0.10", "", "worker"),
        ("address.allocate", "10.50.0.11", "", "worker"),
    ]


# --- what the portal does by itself ------------------------------------------------------------------


def _running(app: App, owner: User) -> Instance:
    services.app_scale(user=owner, app=app, instances=1)
    instance = Instance.objects.get(app=app, slot=0)
    Instance.objects.filter(pk=instance.pk).update(state=Instance.State.RUNNING, container_id="c0ffee")
    instance.refresh_from_db()
    return instance


def test_a_command_run_is_a_row_from_where_it_was_asked(owner: User, web: App) -> None:
    instance = _running(web, owner)
    with acting("api", "192.0.2.7"):
        session, _ = console.exec_prepare(user=owner, instance=instance, argv=["uname", "-a"])
    [row] = _rows(action="exec.run")
    assert (row.actor_name, row.source, row.address, row.object_repr) == (
        "owner",
        "api",
        "192.0.2.7",
        str(instance),
    )
    assert row.data["session"] == session.pk and row.team_slug == "alpha"


def _resize(web: App, owner: User, alpha: Team) -> Operation:
    alpha.auto_approve_memory_mb = 512
    alpha.save()
    resources.request_create(user=owner, app=web, memory_mb=web.memory_mb + 64, cpus=web.cpus, reason="more")
    return Operation.objects.get(app=web, kind=Operation.Kind.RESIZE)


def test_a_resize_applied_is_a_row_of_the_portal(owner: User, web: App, alpha: Team) -> None:
    services.app_scale(user=owner, app=web, instances=2)  # rows only: no container to update yet
    op = _resize(web, owner, alpha)
    with acting("worker"):
        apply.resize(op)
    [row] = _rows(action="resize.applied")
    assert (row.actor, row.source, row.team_slug) == (None, "worker", "alpha")
    assert row.summary.startswith("applied resize of web to memory ") and "2 instance(s) at" in row.summary


def test_a_resize_partly_applied_is_a_row_naming_what_failed(owner: User, web: App, alpha: Team) -> None:
    instance = _running(web, owner)  # its host does not answer: the update fails there
    op = _resize(web, owner, alpha)
    with acting("worker"), pytest.raises(executor.OperationFailed):
        apply.resize(op)
    [row] = _rows(action="resize.partially-applied")
    assert (row.actor, row.source) == (None, "worker") and instance.container_name in row.summary


def test_a_failed_publish_is_a_row_of_the_portal(ops: User, image: BaseImage) -> None:
    BaseImage.objects.filter(pk=image.pk).update(state=BuildState.BUILDING, digest="")
    with acting("worker"):
        publish._fail(image, "Build failed: E: Unable to locate package nope")
        publish._fail(image, "again")  # ended already: no second row
    [row] = _rows(action="image.publish-failed")
    assert (row.actor, row.source, row.object_repr) == (None, "worker", str(image))
    assert (
        row.summary == f"publish of {image.reference} failed: Build failed: E: Unable to locate package nope"
    )


def test_pruning_releases_is_a_row_of_the_portal(owner: User, web: App) -> None:
    for n in range(6):
        services.app_update(user=owner, app=web, env={"N": str(n)}, note=f"n={n}")
    with acting("worker"):
        assert sorted(retention.prune(web)) == [1, 2]
    [row] = _rows(action="release.prune")
    assert (row.actor, row.source, row.object_repr, row.team_slug) == (None, "worker", "web", "alpha")
    assert row.data["pruned"] == [1, 2] and row.summary.startswith("prune release(s) 1, 2 of web")


def test_an_alert_firing_and_resolving_are_rows_of_the_portal(hosts: list[Host]) -> None:
    subject = alerts.Subject.of_host(Kind.HOST_UNREACHABLE, hosts[0])
    with acting("worker"):
        alerts.fire(Kind.HOST_UNREACHABLE, subject, "h1 does not answer")
        alerts.fire(Kind.HOST_UNREACHABLE, subject, "h1 still does not answer")  # a repeat: no row
        alerts.resolve(subject.key, "it answers again")
    fired, resolved = _rows(action__startswith="alert.")
    assert (fired.action, fired.actor, fired.source, fired.object_type) == (
        "alert.fire",
        None,
        "worker",
        "alert",
    )
    assert fired.summary == "Host unreachable: h1 does not answer"
    assert (resolved.action, resolved.summary) == (
        "alert.resolve",
        "resolved: h1 still does not answer (it answers again)",
    )


# --- the terminal ------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("forwarded", "trust", "address"),
    [(None, False, "192.0.2.7"), (b"6.6.6.6, 10.1.2.3", True, "10.1.2.3"), (b"6.6.6.6", False, "192.0.2.7")],
)
async def test_a_terminal_session_is_a_row_from_the_page_with_the_browser_s_address(
    owner: User, web: App, forwarded: bytes | None, trust: bool, address: str
) -> None:
    instance = await sync_to_async(_running)(web, owner)
    client = Client()
    await sync_to_async(client.force_login)(owner)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    headers = [(b"host", b"testserver"), (b"origin", b"http://testserver"), (b"cookie", cookie.encode())]
    if forwarded:
        headers.append((b"x-forwarded-for", forwarded))
    socket = WebsocketCommunicator(application, f"/ws/instances/{instance.pk}/terminal/", headers=headers)
    socket.scope["client"] = ["192.0.2.7", 51000]  # the peer, as the server saw it
    with override_settings(USE_X_FORWARDED_FOR=trust):
        connected, _ = await socket.connect(timeout=10)
        assert connected
        # Nothing answers on the host's port: the shell cannot start and the socket closes.
        while (await socket.receive_output(timeout=15))["type"] != "websocket.close":
            pass
    await socket.wait()
    [row] = await sync_to_async(_rows)(action="terminal.open")
    assert (row.actor_name, row.source, row.address) == ("owner", "page", address)
    assert (row.object_type, row.object_id) == ("instance", str(instance.pk))
