"""Route x role: every URL the portal serves, for anonymous, a developer of another team, the
app's developer, its team lead and ops. A URL without an entry here fails the test."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts import tokens
from apps.alerts.models import Alert, Webhook
from apps.applications import services
from apps.applications.models import App, BaseImage, RetainedVolume
from apps.audit.models import AuditEntry
from apps.console import services as console
from apps.hosts.models import Host
from apps.instances.models import Instance, Operation
from apps.relocations.models import Inspection, Relocation
from apps.resources import services as resources

ROLES = ("anonymous", "outsider", "owner", "lead", "ops")


def _all(code: int) -> dict[str, int]:
    return dict.fromkeys(ROLES, code)


def _signed_in(anon: int, code: int) -> dict[str, int]:
    return {"anonymous": anon, **dict.fromkeys(ROLES[1:], code)}


def _app_scoped(anon: int, member: int) -> dict[str, int]:
    return {"anonymous": anon, "outsider": 404, "owner": member, "lead": member, "ops": member}


def _ops_page(ops: int) -> dict[str, int]:
    # Host pages use staff_member_required: everyone else is sent to the admin login.
    return {**_all(302), "ops": ops}


def _ops_api(ops: int) -> dict[str, int]:
    return {"anonymous": 401, "outsider": 403, "owner": 403, "lead": 403, "ops": ops}


Ctx = dict[str, Any]
Kwargs = Callable[[Ctx], dict[str, Any]]
NONE: Kwargs = lambda c: {}  # noqa: E731
APP: Kwargs = lambda c: {"slug": c["app"].slug}  # noqa: E731
HOST: Kwargs = lambda c: {"pk": c["host"].pk}  # noqa: E731
INSTANCE: Kwargs = lambda c: {"pk": c["instance"].pk}  # noqa: E731
SLOT: Kwargs = lambda c: {"slug": c["app"].slug, "slot": c["instance"].slot}  # noqa: E731
COMMAND: Kwargs = lambda c: {"slug": c["app"].slug, "name": "reload"}  # noqa: E731
SESSION: Kwargs = lambda c: {"pk": c["exec_session"].pk}  # noqa: E731
REQUEST: Kwargs = lambda c: {"pk": c["request"].pk}  # noqa: E731
RELOCATION: Kwargs = lambda c: {"pk": c["relocation"].pk}  # noqa: E731
ALERT: Kwargs = lambda c: {"pk": c["alert"].pk}  # noqa: E731
WEBHOOK: Kwargs = lambda c: {"pk": c["webhook"].pk}  # noqa: E731
TOKEN: Kwargs = lambda c: {"pk": c["token"].pk}  # noqa: E731


def _own(anon: int, owner: int) -> dict[str, int]:
    return {"anonymous": anon, "outsider": 404, "owner": owner, "lead": 404, "ops": 404}


# The owner (a developer) filed ctx's pending request: only the lead and ops may decide it, only
# the owner and ops cancel it, and the service explains every refusal (403 or 422 with the message).
_DECIDE_PAGE = {"anonymous": 302, "outsider": 404, "owner": 403, "lead": 302, "ops": 302}
_DECIDE_API = {"anonymous": 401, "outsider": 404, "owner": 403, "lead": 200, "ops": 200}

# name: (method, kwargs, expected status per role)
MATRIX: dict[str, tuple[str, Kwargs, dict[str, int]]] = {
    "home": ("get", NONE, _signed_in(302, 200)),
    "login": ("get", NONE, _all(200)),
    # OIDC is off unless configured (tests/plain/test_oidc_signin.py turns it on).
    "oidc-start": ("get", NONE, _all(404)),
    "oidc-callback": ("get", NONE, _all(404)),
    "logout": ("post", NONE, _all(302)),
    "healthz": ("get", NONE, _all(200)),
    "token": ("get", NONE, _signed_in(302, 200)),
    "token-create": ("post", NONE, _signed_in(302, 422)),  # empty form: what each field needs
    # ctx's token is the owner's: everyone else's own tokens are all they see (ops: in the admin).
    "token-revoke": ("post", TOKEN, _own(302, 302)),
    "catalog:list": ("get", NONE, _signed_in(302, 200)),
    "catalog:create": ("get", NONE, _signed_in(302, 200)),
    "catalog:detail": ("get", APP, _app_scoped(302, 200)),
    "catalog:edit": ("get", APP, _app_scoped(302, 200)),
    "catalog:activity": ("get", APP, _app_scoped(302, 200)),
    # Empty POSTs: members get the form error back as a message and a redirect.
    "catalog:scale": ("post", APP, _app_scoped(302, 302)),
    "catalog:upgrade": ("post", APP, _app_scoped(302, 302)),
    "catalog:releases": ("post", APP, _app_scoped(302, 302)),
    "catalog:rollback": ("post", lambda c: {"slug": c["app"].slug, "number": 1}, _app_scoped(302, 302)),
    "catalog:address": ("post", APP, _app_scoped(302, 302)),
    "catalog:delete": ("post", APP, _app_scoped(302, 302)),
    "catalog:instance-action": (
        "post",
        lambda c: {"slug": c["app"].slug, "pk": c["instance"].pk, "action": "stop"},
        _app_scoped(302, 302),
    ),
    # Moves are for ops; an empty POST names no instance or host: a message and a redirect.
    "catalog:move": ("post", APP, _app_scoped(302, 302)),
    "hosts:list": ("get", NONE, _ops_page(200)),
    "hosts:detail": ("get", HOST, _ops_page(200)),
    "hosts:confirm-key": ("post", HOST, _ops_page(400)),
    "hosts:refetch-key": ("post", HOST, _ops_page(200)),
    "hosts:probe": ("post", HOST, _ops_page(200)),
    "hosts:fix-network": ("post", HOST, _ops_page(302)),
    "hosts:override": ("post", HOST, _ops_page(302)),
    "hosts:fix-networks": ("post", HOST, _ops_page(302)),  # no pool: nothing to make, a message
    "hosts:drain": ("post", HOST, _ops_page(302)),
    "hosts:activate": ("post", HOST, _ops_page(302)),  # not draining: a message
    "hosts:prepare": ("post", HOST, _ops_page(302)),  # starts (no worker here): a message
    "hosts:prepare-progress": ("get", HOST, _ops_page(286)),  # none running: stop polling
    "hosts:drain-progress": ("get", HOST, _ops_page(286)),  # no drain: stop polling
    "hosts:planner": ("get", NONE, _ops_page(200)),
    # ctx's one instance already sits on a single host: nothing to empty, a message.
    "hosts:planner-apply": ("post", NONE, _ops_page(302)),
    "hosts:spread": ("get", NONE, _ops_page(200)),
    # ctx's app has one instance: nothing to spread, said with 422.
    "hosts:spread-app": ("post", lambda c: {"app_id": c["app"].pk}, _ops_page(422)),
    # ctx's retained volume has a path outside the volume root: purging refuses, with 422.
    "hosts:purge-volume": (
        "post",
        lambda c: {"pk": c["host"].pk, "volume_id": c["retained"].pk},
        _ops_page(422),
    ),
    "admin:index": ("get", NONE, _ops_page(200)),
    "api-root": ("get", NONE, _signed_in(401, 200)),
    "host-list": ("get", NONE, _signed_in(401, 200)),
    "host-detail": ("get", HOST, _signed_in(401, 200)),
    "host-confirm-key": ("post", HOST, _ops_api(400)),
    "host-probe": ("post", HOST, _ops_api(200)),
    "host-drain": ("get", HOST, {"anonymous": 401, "outsider": 200, "owner": 200, "lead": 200, "ops": 200}),
    "host-activate": ("post", HOST, _ops_api(400)),  # not draining
    "host-prepare": ("get", HOST, {"anonymous": 401, "outsider": 200, "owner": 200, "lead": 200, "ops": 200}),
    "host-fix-network": ("post", HOST, _ops_api(400)),
    "host-metrics": ("get", HOST, _ops_api(200)),
    "host-override": ("post", HOST, _ops_api(400)),
    "app-list": ("get", NONE, _signed_in(401, 200)),
    "app-detail": ("get", APP, _app_scoped(401, 200)),
    "app-scale": ("post", APP, _app_scoped(401, 400)),
    "app-upgrade": ("post", APP, _app_scoped(401, 400)),
    "app-instances": ("get", APP, _app_scoped(401, 200)),
    "app-operations": ("get", APP, _app_scoped(401, 200)),
    "app-volume": ("post", APP, _app_scoped(401, 400)),
    "app-releases": ("get", APP, _app_scoped(401, 200)),
    # ctx's app has only release 1: nothing earlier to roll back to (said with 400).
    "app-rollback": ("post", APP, _app_scoped(401, 400)),
    "app-addresses": ("get", APP, _app_scoped(401, 200)),
    "app-metrics": ("get", APP, _app_scoped(401, 200)),
    "app-commands": ("get", APP, _app_scoped(401, 200)),
    # ctx's instance has no container: nothing to merge, an empty text.
    "app-logs": ("get", APP, _app_scoped(401, 200)),
    "app-events": ("get", APP, _app_scoped(401, 200)),
    "instance-events": ("get", INSTANCE, _app_scoped(401, 200)),
    "instance-exec": ("post", INSTANCE, _app_scoped(401, 400)),  # empty body: no command
    # ctx's instance has no container yet: said with 400 (the lab tests read real logs).
    "instance-logs": ("get", INSTANCE, _app_scoped(401, 400)),
    "exec-session-list": ("get", NONE, _signed_in(401, 200)),
    # Developers see their own sessions, leads their team's, ops all.
    "exec-session-detail": ("get", SESSION, _app_scoped(401, 200)),
    "console:instance": ("get", SLOT, _app_scoped(302, 200)),
    "console:exec": ("post", SLOT, _app_scoped(302, 422)),  # empty form: no command
    # No container yet: the panel says so, with 422. The follow websocket is tested in
    # tests/docker/test_logs_follow_ws.py.
    "console:logs": ("get", SLOT, _app_scoped(302, 422)),
    "console:app-logs": ("get", APP, _app_scoped(302, 200)),  # no container yet: no lines
    # The page only; the websocket behind it is tested in tests/docker/test_terminal_ws.py.
    "console:terminal": ("get", SLOT, _app_scoped(302, 200)),
    "console:audit": ("get", APP, _app_scoped(302, 200)),
    # Developers may not define commands; leads and ops get the form back with what is wrong.
    "console:command-save": (
        "post",
        APP,
        {"anonymous": 302, "outsider": 404, "owner": 403, "lead": 302, "ops": 302},
    ),
    "console:command-delete": (
        "post",
        COMMAND,
        {"anonymous": 302, "outsider": 404, "owner": 403, "lead": 302, "ops": 302},
    ),
    "instance-metrics": ("get", INSTANCE, _app_scoped(401, 200)),
    "instance-detail": ("get", INSTANCE, _app_scoped(401, 200)),
    "instance-start": ("post", INSTANCE, _app_scoped(401, 202)),
    "instance-stop": ("post", INSTANCE, _app_scoped(401, 202)),
    "instance-restart": ("post", INSTANCE, _app_scoped(401, 202)),
    "instance-move": ("post", INSTANCE, _app_scoped(401, 400)),  # empty body: no host named
    "operation-detail": ("get", lambda c: {"pk": c["operation"].pk}, _app_scoped(401, 200)),
    "resources:approvals": ("get", NONE, _signed_in(302, 200)),
    "resources:approve": ("post", REQUEST, _DECIDE_PAGE),
    "resources:reject": ("post", REQUEST, _DECIDE_PAGE),
    "resources:cancel": (
        "post",
        REQUEST,
        {"anonymous": 302, "outsider": 404, "owner": 302, "lead": 403, "ops": 302},
    ),
    "resources:retry": ("post", REQUEST, _app_scoped(302, 422)),  # pending, not partially applied
    "resources:request": ("post", APP, _app_scoped(302, 422)),  # empty: the service asks for a reason
    "resources:card": ("get", APP, _app_scoped(302, 200)),  # a request waits: the card polls on
    "resource-request-list": ("get", NONE, _signed_in(401, 200)),
    "resource-request-detail": ("get", REQUEST, _app_scoped(401, 200)),
    "resource-request-approve": ("post", REQUEST, _DECIDE_API),
    "resource-request-reject": ("post", REQUEST, _DECIDE_API),
    "resource-request-cancel": (
        "post",
        REQUEST,
        {"anonymous": 401, "outsider": 404, "owner": 200, "lead": 403, "ops": 200},
    ),
    "resource-request-retry": ("post", REQUEST, _app_scoped(401, 400)),
    "app-resource-requests": ("get", APP, _app_scoped(401, 200)),
    "relocations:list": ("get", NONE, _signed_in(302, 200)),
    "relocations:create": ("get", NONE, _signed_in(302, 200)),
    "relocations:detail": ("get", RELOCATION, _app_scoped(302, 200)),
    "relocations:inspection": (
        "get",
        lambda c: {"pk": c["relocation"].pk, "inspection_id": c["inspection"].pk},
        _app_scoped(302, 200),
    ),
    # ctx's VM is registered, its key not confirmed: empty forms come back with what is wrong,
    # refused actions answer with a message and a redirect. Nothing reaches the VM.
    "relocations:confirm-key": ("post", RELOCATION, _app_scoped(302, 400)),
    "relocations:install-key": ("post", RELOCATION, _app_scoped(302, 400)),
    "relocations:inspect": ("post", RELOCATION, _app_scoped(302, 302)),
    "relocations:plan": ("post", RELOCATION, _app_scoped(302, 400)),
    "relocations:run": ("post", RELOCATION, _app_scoped(302, 302)),
    "relocations:cancel": ("post", RELOCATION, _app_scoped(302, 302)),
    "relocations:rollback": ("post", RELOCATION, _app_scoped(302, 302)),  # not failed: a message
    "relocation-list": ("get", NONE, _signed_in(401, 200)),
    "relocation-detail": ("get", RELOCATION, _app_scoped(401, 200)),
    "relocation-inspections": ("get", RELOCATION, _app_scoped(401, 200)),
    # Empty bodies and a VM whose key is not confirmed: each refused with the service's message.
    "relocation-confirm-key": ("post", RELOCATION, _app_scoped(401, 400)),
    "relocation-install-key": ("post", RELOCATION, _app_scoped(401, 400)),
    "relocation-inspect": ("post", RELOCATION, _app_scoped(401, 400)),
    "relocation-plan": ("get", RELOCATION, _app_scoped(401, 400)),  # nothing inspected yet
    "relocation-run": ("post", RELOCATION, _app_scoped(401, 400)),
    "relocation-rollback": ("post", RELOCATION, _app_scoped(401, 400)),
    "relocation-cancel": ("post", RELOCATION, _app_scoped(401, 200)),
    "base-image-list": ("get", NONE, _signed_in(401, 200)),
    "base-image-detail": ("get", lambda c: {"pk": c["image"].pk}, _signed_in(401, 200)),
    # ctx's image has no recipe: ops are told so; nobody else may publish or roll.
    "base-image-publish": ("post", lambda c: {"pk": c["image"].pk}, _ops_api(400)),
    "base-image-roll": ("post", lambda c: {"pk": c["image"].pk}, _ops_api(202)),
    # ctx's image is not being built: ops are told so.
    "base-image-cancel": ("post", lambda c: {"pk": c["image"].pk}, _ops_api(400)),
    "images:list": ("get", NONE, _signed_in(302, 200)),
    "images:registry": ("get", NONE, _ops_page(200)),
    "image-registry": ("get", NONE, _ops_api(200)),
    "images:publish": ("post", lambda c: {"pk": c["image"].pk}, _signed_in(302, 302)),
    "images:roll": ("post", lambda c: {"pk": c["image"].pk}, _signed_in(302, 302)),
    # Only ops make versions: others get 403 with the reason; the form itself for ops.
    "images:new-version": (
        "get",
        lambda c: {"pk": c["image"].pk},
        {"anonymous": 302, "outsider": 403, "owner": 403, "lead": 403, "ops": 200},
    ),
    "images:recommend": ("post", lambda c: {"pk": c["image"].pk}, _signed_in(302, 302)),
    "images:cancel": ("post", lambda c: {"pk": c["image"].pk}, _signed_in(302, 302)),
    "images:new": ("get", NONE, {"anonymous": 302, "outsider": 403, "owner": 403, "lead": 403, "ops": 200}),
    "activity": ("get", NONE, _signed_in(302, 200)),
    "alerts:list": ("get", NONE, _signed_in(302, 200)),
    "alerts:detail": ("get", ALERT, _app_scoped(302, 200)),
    "alerts:read": ("post", NONE, _signed_in(302, 302)),
    "alerts:badge": ("get", NONE, _signed_in(302, 200)),
    "alerts:rules": ("get", NONE, _signed_in(302, 200)),
    "alerts:webhooks": ("get", NONE, _signed_in(302, 200)),
    "alerts:webhook": ("get", WEBHOOK, _app_scoped(302, 200)),
    # Only the team's lead (or ops) removes it; the owner is told so on the list it goes back to.
    "alerts:webhook-delete": ("post", WEBHOOK, _app_scoped(302, 302)),
    "alert-list": ("get", NONE, _signed_in(401, 200)),
    "alert-detail": ("get", ALERT, _app_scoped(401, 200)),
    "alert-rule-list": ("get", NONE, _signed_in(401, 200)),
    "alert-rule-reset": ("delete", NONE, _signed_in(401, 400)),  # no team named
    "webhook-list": ("get", NONE, _signed_in(401, 200)),
    "webhook-detail": ("get", WEBHOOK, _app_scoped(401, 200)),
    "webhook-deliveries": ("get", WEBHOOK, _app_scoped(401, 200)),
    "notification-list": ("get", NONE, _signed_in(401, 200)),
    "notification-read": ("post", NONE, _signed_in(401, 200)),
    "api-token-list": ("get", NONE, _signed_in(401, 200)),
    "api-token-detail": ("delete", TOKEN, _own(401, 204)),
    "schema": ("get", NONE, _all(200)),
    "prometheus": ("get", NONE, _all(404)),  # off without METRICS_TOKEN; the token, not a session, opens it
    "api-docs": ("get", NONE, _all(200)),
    "audit:list": ("get", NONE, _ops_page(200)),
    "audit:export": ("get", lambda c: {"fmt": "csv"}, _ops_page(200)),
    "audit-entry-list": ("get", NONE, _ops_api(200)),
    "audit-entry-detail": ("get", lambda c: {"pk": c["audit"].pk}, _ops_api(200)),
}


def _names(patterns: list[Any], namespace: str = "") -> set[str]:
    found: set[str] = set()
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            if pattern.namespace == "admin":
                found.add("admin:index")  # Django's own admin: its entry point stands for it
                continue
            found |= _names(pattern.url_patterns, inner)
        elif isinstance(pattern, URLPattern) and pattern.name:
            found.add(f"{namespace}{pattern.name}")
    return found


def test_every_url_has_an_entry_in_the_matrix() -> None:
    served = _names(get_resolver().url_patterns)
    assert served - set(MATRIX) == set(), "URLs without a route x role entry"
    assert set(MATRIX) - served == set(), "entries for URLs that no longer exist"


@pytest.fixture
def ctx(owner: User, lead: User, outsider: User, ops: User, image: BaseImage, hosts: list[Host]) -> Ctx:
    app: App = services.app_create(
        user=owner, team=owner.memberships.get().team, slug="web", base_image=image, instances=1
    )
    request = resources.request_create(user=owner, app=app, memory_mb=128, cpus=app.cpus, reason="cache")
    instance = Instance.objects.get(app=app)
    exec_session = console.session_open(user=owner, instance=instance, kind="command", argv=["true"])
    relocation = Relocation.objects.create(
        team=app.team,
        name="legacy",
        address="10.213.99.9",
        offered_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==",
        created_by=owner,
    )
    inspection = Inspection.objects.create(relocation=relocation, error="authentication failed")
    now = timezone.now()
    alert = Alert.objects.create(
        kind="oom_kill",
        key=f"oom_kill:instance:{instance.pk}",
        team=app.team,
        app=app,
        app_slug=app.slug,
        instance=instance,
        subject=instance.container_name,
        summary="slw-web-0 died: exit code 137 (OOM killed)",
        started_at=now,
        last_seen_at=now,
    )
    webhook = Webhook.objects.create(
        team=app.team, name="lb", url="http://10.213.0.1:9/hook", topics=["alerts"]
    )
    return {
        "app": app,
        "exec_session": exec_session,
        "request": request,
        "relocation": relocation,
        "inspection": inspection,
        "instance": Instance.objects.get(app=app),
        "operation": Operation.objects.get(app=app),
        "host": hosts[0],
        "retained": RetainedVolume.objects.create(host=hosts[0], app_slug="gone", path="/etc"),
        "audit": AuditEntry.objects.order_by("id").first(),
        "image": image,
        "alert": alert,
        "webhook": webhook,
        "token": tokens.api_token_create(
            user=owner, name="laptop", scope="write", expires_at=tokens.expires_after(30)
        ).token,
        "users": {"owner": owner, "lead": lead, "outsider": outsider, "ops": ops},
    }


@pytest.mark.parametrize("name", sorted(MATRIX))
@pytest.mark.parametrize("role", ROLES)
def test_route_answers_each_role_as_expected(ctx: Ctx, name: str, role: str) -> None:
    method, kwargs, expected = MATRIX[name]
    client = APIClient()
    if role != "anonymous":
        client.force_login(ctx["users"][role])
    url = reverse(name, kwargs=kwargs(ctx))
    response = getattr(client, method)(url, {}, format="multipart" if method == "post" else None)
    assert response.status_code == expected[role], f"{method.upper()} {url} as {role}"
