"""Schemathesis over the OpenAPI schema the portal serves at /api/schema/: no operation answers
a 500 (or takes long), whatever the input, for a developer who owns an app and for ops.

Every operation of the schema is covered; none is left out. Requests go in-process through the
WSGI application, on a database with realistic rows (two teams, apps with instances, base
images, hosts, an IP pool, a resource request, relocations, an exec audit row). Path
parameters and the body fields that name other rows are drawn from those rows as well as
generated, so requests get past the 404 into the services.

Nothing leaves the machine. The hosts and VMs are 127.0.0.1 on closed ports, and a guard
refuses every connection and every name lookup, so the endpoints that reach a host while the
request waits (exec, host probe / fix-network / register / confirm-key, relocation register /
install-key, the live usage read of a resize) fail at once, the way an unreachable host does;
the tests at the end say so endpoint by endpoint. Everything else is only queued: operations
are sent to the broker on commit, and the test's transaction is never committed.

Bounded and reproducible: 15 generated examples per operation and role (plus schemathesis's
deterministic coverage cases), derandomized."""

from __future__ import annotations

import errno
import ipaddress
import socket
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core.signals import got_request_exception, request_finished, request_started
from django.db import close_old_connections
from django.test import override_settings
from django.utils import timezone
from hypothesis import strategies as st
from rest_framework.test import APIClient
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import TestPhase

from apps.accounts import tokens
from apps.accounts.models import Team
from apps.applications import services as catalog
from apps.applications.models import App, BaseImage, BuildState
from apps.console import services as console
from apps.console.models import ExecSession, NamedCommand
from apps.hosts.models import Host
from apps.hosts.transport import fingerprint
from apps.instances.models import Instance, Operation
from apps.network.models import IPPool
from apps.relocations import services as relocation_services
from apps.relocations.models import Inspection, Relocation
from apps.resources import services as resources
from portal.wsgi import application
from tests.helpers import api_token

OFFERED_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBnXmNkpgxW4gB8KXW2Jb0f6bjXXh3bH3YkQnVnYkq7W"
# What an inspection finds on a VM with a small Python app: enough for a plan to be suggested.
REPORT: dict[str, Any] = {
    "os": {"pretty_name": "Debian GNU/Linux 12 (bookworm)", "id": "debian", "hostname": "notes-vm"},
    "addresses": [
        {"address": "10.213.9.40", "prefixlen": 24, "dev": "eth0", "mac": "52:54:00:12:34:56", "ssh": True},
        {"address": "10.213.9.41", "prefixlen": 24, "dev": "eth1", "mac": "52:54:00:12:34:57", "ssh": False},
    ],
    "listening": [
        {
            "port": 8000,
            "address": "0.0.0.0",
            "pid": 412,
            "process": "gunicorn",
            "argv": ["/srv/notes/venv/bin/gunicorn", "--bind", "0.0.0.0:8000", "notes.wsgi"],
            "cwd": "/srv/notes",
            "user": "notes",
            "rss_mb": 61.3,
            "cpu_percent": 1.2,
            "runtime": "python",
            "env": {"NOTES_DB": "/srv/notes/data/notes.db"},
            "config_files": [],
        }
    ],
    "runtime": {"kind": "python", "evidence": "python3 runs gunicorn", "pid": 412},
    "candidates": [{"path": "/srv/notes", "size_bytes": 12_345, "files": 14, "reason": "working directory"}],
    "services": [
        {
            "name": "notes",
            "kind": "systemd",
            "path": "/etc/systemd/system/notes.service",
            "start": ["systemctl", "start", "notes.service"],
            "stop": ["systemctl", "stop", "notes.service"],
        }
    ],
    "main_pid": 412,
    "errors": [],
}

schema = schemathesis.openapi.from_wsgi(
    "/api/schema/",
    application,
    config=schemathesis.Config.from_dict(
        {
            "generation": {
                # Valid and invalid inputs: every bad input must get a 4xx that says why.
                "mode": "all",
                # Authentication is the test's (a user's token), not generated.
                "with-security-parameters": False,
            },
        }
    ),
)


# --- the rows that path parameters are drawn from --------------------------------------------------

# Filled by the `fleet` fixture for the test that runs; read while Hypothesis draws. Path
# parameters by path prefix; body fields that name other rows, by path prefix and field.
_known: dict[str, list[Any]] = {}
_references: dict[str, dict[str, list[Any]]] = {}


def _known_for(path: str) -> list[Any]:
    for prefix, values in _known.items():
        if path.startswith(prefix):
            return values
    return []


@schema.hook
def flatmap_path_parameters(context: schemathesis.HookContext, path_parameters: dict[str, Any] | None) -> Any:
    """The generated value, or the key of a row that exists (another team's among them)."""
    operation = context.operation
    if operation is None or not path_parameters or len(path_parameters) != 1:
        return st.just(path_parameters)
    (name,) = path_parameters
    choices = [path_parameters] + [{name: value} for value in _known_for(operation.path)]
    return st.sampled_from(choices)


def _fields_for(path: str) -> dict[str, list[Any]]:
    fields: dict[str, list[Any]] = {}
    for prefix, references in _references.items():
        if path.startswith(prefix):
            fields.update(references)
    return fields


# Anything JSON can say, for one field of an object the API takes whole (a relocation plan).
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _one_field_changed(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda key, value: {**base, key: value}, st.sampled_from(sorted(base)), _json)


def _choices(generated: Any, known: list[Any]) -> st.SearchStrategy[Any]:
    options: list[st.SearchStrategy[Any]] = [st.just(generated), st.sampled_from(known)]
    options += [_one_field_changed(value) for value in known if isinstance(value, dict)]
    return st.one_of(options)


@schema.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> Any:
    """Fields that name a team, an image, a host, an app...: as generated, or a real one, so the
    rest of the body reaches the service instead of stopping at "no such team"."""
    operation = context.operation
    if operation is None or not isinstance(body, dict):
        return st.just(body)
    fields = _fields_for(operation.path)
    if not fields.keys() & body.keys():
        return st.just(body)
    return st.fixed_dictionaries(
        {
            key: _choices(value, fields[key]) if key in fields else st.just(value)
            for key, value in body.items()
        }
    )


def _aim_at_rows(case: schemathesis.Case) -> None:
    """The coverage phase's cases are made when the tests are collected, before any row exists,
    so the hooks above cannot reach them. Each varies one thing; everything else is pointed at
    real rows here, so a boundary value in the body meets the service, not a 404."""
    meta = case.meta
    if meta is None or meta.phase.name != TestPhase.COVERAGE:
        return
    data = meta.phase.data
    varied = f"{getattr(data, 'description', '')} {getattr(data, 'parameter', '')}"
    location = getattr(data, "parameter_location", None)
    known = _known_for(case.operation.path)
    if (
        known
        and case.path_parameters
        and len(case.path_parameters) == 1
        and location != ParameterLocation.PATH
    ):
        (name,) = case.path_parameters
        case.path_parameters[name] = known[0]
    if isinstance(case.body, dict):
        for key, values in _fields_for(case.operation.path).items():
            if (
                key in case.body
                and f"'{key}'" not in varied
                and f"/{key}" not in varied
                and f": {key}" not in varied
            ):
                case.body[key] = values[0]


# --- isolation: no network, no stray files, the test's own transaction --------------------------------


@dataclass
class NetworkGuard:
    """Refuses every connection (loopback too: a fuzzed port could be a local service) and every
    lookup of a name; what was tried is kept, to show what reached for a host."""

    refused: list[str] = field(default_factory=list)


@pytest.fixture
def network_guard(monkeypatch: pytest.MonkeyPatch) -> NetworkGuard:
    # Not even the test broker: operations are sent on commit, and the test's transaction is
    # never committed. A send that did not wait for the commit meets a broker that is down,
    # which the services already handle.
    guard = NetworkGuard()
    real_getaddrinfo = socket.getaddrinfo

    def connect(sock: socket.socket, address: Any) -> None:
        guard.refused.append(repr(address))
        raise ConnectionRefusedError(errno.ECONNREFUSED, f"refused by the fuzz test's guard: {address!r}")

    def connect_ex(sock: socket.socket, address: Any) -> int:
        guard.refused.append(repr(address))
        return errno.ECONNREFUSED

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        # An address is looked up without asking anyone; a name would ask a DNS server.
        name = host.decode() if isinstance(host, bytes) else str(host)
        try:
            ipaddress.ip_address(name.split("%")[0])
        except ValueError:
            guard.refused.append(f"lookup of {name!r}")
            raise socket.gaierror(socket.EAI_NONAME, f"no lookups in the fuzz test: {name!r}") from None
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return guard


@pytest.fixture
def _in_test_transaction() -> Iterator[None]:
    # The WSGI handler closes "old" connections around each request, which would end the
    # test's transaction (Django's own test client disconnects the same receivers).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def server_errors() -> Iterator[list[str]]:
    """Tracebacks of the exceptions that became 500s, to show with the failing request."""
    caught: list[str] = []

    def keep(sender: Any, request: Any = None, **kwargs: Any) -> None:
        caught.append(traceback.format_exc())

    got_request_exception.connect(keep, weak=False)
    try:
        yield caught
    finally:
        got_request_exception.disconnect(keep)


# --- the fleet -------------------------------------------------------------------------------------------


@dataclass
class Fleet:
    owner: User
    ops: User
    web: App


@pytest.fixture
def fleet(
    db: None,
    network_guard: NetworkGuard,
    tmp_path: Path,
    owner: User,
    outsider: User,
    ops: User,
    alpha: Team,
    beta: Team,
    hosts: list[Host],
    image: BaseImage,
) -> Iterator[Fleet]:
    image.state = BuildState.PUBLISHED
    image.save(update_fields=["state"])
    v2 = BaseImage.objects.create(
        name=image.name, tag="2", runtime=image.runtime, state=BuildState.PUBLISHED, default_port=8080
    )
    v2.hosts.set(hosts)
    python = BaseImage.objects.create(
        name="slipway/python", tag="3.11", runtime="python", state=BuildState.PUBLISHED, default_port=8000
    )
    python.hosts.set(hosts)
    draft = BaseImage.objects.create(
        name=image.name,
        tag="3",
        runtime=image.runtime,
        state=BuildState.DRAFT,
        recipe="FROM scratch\nADD busybox /\n",
    )
    pool = IPPool.objects.create(
        name="public",
        network="10.213.9.0/24",
        gateway="10.213.9.1",
        range_start="10.213.9.10",
        range_end="10.213.9.30",
    )
    pool.full_clean()
    pool.hosts.set(hosts)
    # A key offered and not yet confirmed: confirming it probes the host (refused at once).
    Host.objects.filter(pk=hosts[1].pk).update(offered_host_key=OFFERED_KEY)

    web = catalog.app_create(user=owner, team=alpha, slug="web", base_image=image, port=8080)
    catalog.app_scale(user=owner, app=web, instances=2)
    running = Instance.objects.get(app=web, slot=0)
    running.state = Instance.State.RUNNING
    running.container_id = "c0ffee" * 10
    running.save(update_fields=["state", "container_id"])
    theirs = catalog.app_create(user=outsider, team=beta, slug="theirs", base_image=image)
    catalog.app_scale(user=outsider, app=theirs, instances=1)
    NamedCommand.objects.create(app=web, name="reload", argv=["kill", "-HUP", "1"])

    resize = resources.request_create(user=owner, app=web, memory_mb=256, cpus="0.5", reason="cache grows")
    audit = console.session_open(user=owner, instance=running, kind=ExecSession.Kind.COMMAND, argv=["uptime"])
    relocations = [
        Relocation.objects.create(
            team=alpha,
            name="Notes VM inspected",
            address="127.0.0.1",
            port=1,
            offered_key=OFFERED_KEY,
            host_key=OFFERED_KEY,
            key_confirmed_at=timezone.now(),
            state=Relocation.State.INSPECTED,
            created_by=owner,
        ),
        Relocation.objects.create(
            team=alpha,
            name="Notes VM",
            address="127.0.0.1",
            port=1,  # closed: anything that tries SSH is refused at once
            offered_key=OFFERED_KEY,
            host_key=OFFERED_KEY,
            key_confirmed_at=timezone.now(),
            state=Relocation.State.READY,
            created_by=owner,
        ),
        Relocation.objects.create(
            team=beta,
            name="Their VM",
            address="127.0.0.1",
            port=2,
            offered_key=OFFERED_KEY,
            created_by=outsider,
        ),
    ]

    Inspection.objects.create(relocation=relocations[0], report=REPORT)
    suggested = relocation_services.plan_suggestion(relocations[0])

    everywhere: dict[str, list[Any]] = {
        "team": ["alpha", "beta"],
        "base_image": [image.pk, "slipway/busybox:2", draft.pk],
        "host": ["h1", "h2"],
        "apps": [["web"], ["web", "theirs"]],
        "name": ["reload"],
        "argv": [["uptime"], ["sh", "-c", "exit 3"]],
        "instances": [1, 3],
        "memory_mb": [32, 128],
        "cpus": ["0.1", "0.5"],
        "fingerprint": [fingerprint(OFFERED_KEY)],
    }
    _references.update(
        {
            "/api/v1/": everywhere,
            # Pool addresses only where they are app addresses: nothing is to connect to them.
            "/api/v1/apps/": {
                "slug": ["fresh"],
                "health_path": ["/healthz"],
                "address": ["10.213.9.15", "10.213.9.31"],
                "ip_pool": ["public"],
                "slot": [0, 1, 5],
            },
            # Where hosts and VMs are registered: the guard refuses the key fetch at once.
            "/api/v1/hosts/": {"address": ["127.0.0.1"], "name": ["h3"]},
            "/api/v1/relocations/": {"address": ["127.0.0.1"], "name": ["Wiki VM"], "plan": [suggested]},
        }
    )
    _known.update(
        {
            "/api/v1/apps/": ["web", "theirs"],
            "/api/v1/instances/": list(Instance.objects.order_by("pk").values_list("pk", flat=True)),
            "/api/v1/operations/": list(Operation.objects.order_by("pk").values_list("pk", flat=True)),
            "/api/v1/base-images/": [image.pk, v2.pk, draft.pk, python.pk],
            "/api/v1/hosts/": [host.pk for host in hosts],
            "/api/v1/resource-requests/": [resize.pk],
            "/api/v1/relocations/": [r.pk for r in relocations],
            "/api/v1/exec-sessions/": [audit.pk],
            # The owner's, ops' and another user's: revoked, or a 404.
            "/api/v1/tokens/": [
                tokens.api_token_create(
                    user=user, name="fuzzed", scope="read", expires_at=tokens.expires_after(7)
                ).token.pk
                for user in (owner, ops, outsider)
            ],
        }
    )
    try:
        # Uploads and image builds write files: into the test's own folder.
        with override_settings(MEDIA_ROOT=tmp_path / "media", IMAGE_ARCHIVE_DIR=tmp_path / "images"):
            yield Fleet(owner=owner, ops=ops, web=web)
    finally:
        _known.clear()
        _references.clear()


# --- the test -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["developer", "ops"])
@schema.parametrize()
@hypothesis.settings(
    max_examples=15,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_no_input_makes_the_api_answer_500(
    case: schemathesis.Case,
    role: str,
    fleet: Fleet,
    server_errors: list[str],
    _in_test_transaction: None,
) -> None:
    user = fleet.ops if role == "ops" else fleet.owner
    # A token of its own per call: an earlier call may have revoked one (DELETE /tokens/{id}/).
    key = api_token(user)
    _aim_at_rows(case)
    server_errors.clear()
    response = case.call(headers={"Authorization": f"Token {key}"})
    try:
        case.validate_response(response, checks=[not_a_server_error])
    except FailureGroup as failure:
        if not server_errors:
            raise
        # Schemathesis drops notes from its failures: the server's side goes in the message.
        raise AssertionError(f"{failure}\nServer traceback:\n{server_errors[-1]}") from failure


# --- what the fuzzing found, and what it relies on, said plainly ---------------------------------------


def _api(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


LISTS_PAGED_BY_PORTAL_API = [
    "/api/v1/hosts/",
    "/api/v1/exec-sessions/",
    "/api/v1/relocations/",
    "/api/v1/resource-requests/",
    "/api/v1/apps/",
    "/api/v1/base-images/",
]


@pytest.mark.parametrize("path", LISTS_PAGED_BY_PORTAL_API)
def test_a_page_limit_out_of_range_is_a_400_that_says_what_is_allowed(fleet: Fleet, path: str) -> None:
    api = _api(fleet.ops)
    # Past 2**63 the database refused the LIMIT: a 500 (found by the fuzzing above).
    for query in (f"limit={2**70}", "limit=0", "limit=1001", "limit=ten"):
        response = api.get(f"{path}?{query}")
        assert response.status_code == 400, (query, response.content)
        assert "a whole number from 1 to 1000" in response.json()["limit"]
    for query in ("offset=-1", "offset=first"):
        response = api.get(f"{path}?{query}")
        assert response.status_code == 400, (query, response.content)
        assert "a whole number of at least 0" in response.json()["offset"]
    page = api.get(f"{path}?limit=1&offset={2**70}")
    assert page.status_code == 200 and page.json()["results"] == []
    assert api.get(f"{path}?limit=1000").status_code == 200


def _running(fleet: Fleet) -> Instance:
    return Instance.objects.get(app=fleet.web, state=Instance.State.RUNNING)


# Every endpoint that talks to a host while the request waits, as the fuzzing meets it: the
# host does not answer (here: the guard refuses, as a closed port would), and the answer comes
# at once, saying so. (method, path, body, role, expected status, what the answer says)
REACHES_A_HOST = [
    pytest.param(
        lambda f: f"/api/v1/instances/{_running(f).pk}/exec/",
        {"argv": ["uptime"]},
        "developer",
        400,
        "refused",
        id="exec",
    ),
    pytest.param(
        lambda f: f"/api/v1/hosts/{_running(f).host_id}/probe/",
        None,
        "ops",
        200,
        '"state":"unreachable"',
        id="host-probe",
    ),
    pytest.param(
        lambda f: f"/api/v1/hosts/{_running(f).host_id}/fix-network/",
        None,
        "ops",
        400,
        "fix-network failed",
        id="host-fix-network",
    ),
    pytest.param(
        lambda f: "/api/v1/hosts/",
        {"name": "h3", "address": "127.0.0.1", "ssh_port": 3},
        "ops",
        400,
        "Cannot fetch the SSH host key",
        id="host-register",
    ),
    pytest.param(
        lambda f: f"/api/v1/hosts/{Host.objects.get(name='h2').pk}/confirm-key/",
        {"fingerprint": fingerprint(OFFERED_KEY)},
        "ops",
        200,
        '"state":"unreachable"',
        id="host-confirm-key",
    ),
    pytest.param(
        lambda f: "/api/v1/relocations/",
        {"team": "alpha", "name": "Wiki VM", "address": "127.0.0.1", "port": 1},
        "developer",
        400,
        "Cannot reach SSH on 127.0.0.1:1",
        id="relocation-register",
    ),
    pytest.param(
        lambda f: f"/api/v1/relocations/{Relocation.objects.get(name='Notes VM').pk}/install-key/",
        {"password": "once"},
        "developer",
        400,
        "refused",
        id="relocation-install-key",
    ),
]


@pytest.mark.parametrize(("path", "body", "role", "status", "says"), REACHES_A_HOST)
def test_an_endpoint_that_reaches_a_host_answers_at_once_when_the_host_does_not(
    fleet: Fleet, network_guard: NetworkGuard, path: Any, body: Any, role: str, status: int, says: str
) -> None:
    api = _api(fleet.ops if role == "ops" else fleet.owner)
    network_guard.refused.clear()
    response = api.post(path(fleet), body, format="json")
    assert response.status_code == status, response.content
    assert says in response.content.decode()
    assert network_guard.refused, "it did not try the host: this test no longer shows what it claims"


def test_what_is_queued_reaches_no_host_while_the_request_waits(
    fleet: Fleet, network_guard: NetworkGuard
) -> None:
    draft = BaseImage.objects.get(tag="3")
    relocation = Relocation.objects.get(name="Notes VM")
    network_guard.refused.clear()
    for path, role in (
        (f"/api/v1/base-images/{draft.pk}/publish/", "ops"),
        (f"/api/v1/relocations/{relocation.pk}/inspect/", "developer"),
        (f"/api/v1/instances/{_running(fleet).pk}/restart/", "developer"),
        (f"/api/v1/hosts/{_running(fleet).host_id}/drain/", "ops"),
    ):
        response = _api(fleet.ops if role == "ops" else fleet.owner).post(path)
        assert response.status_code in (200, 202), (path, response.content)
    assert network_guard.refused == []


def test_a_nul_byte_in_a_team_is_a_400_that_says_so(fleet: Fleet) -> None:
    # PostgreSQL refused to compare the text (a 500 there; SQLite found no team).
    response = _api(fleet.owner).post(
        "/api/v1/relocations/",
        {"team": "al\x00pha", "name": "Wiki VM", "address": "127.0.0.1", "port": 1},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["team"] == ["A slug never holds a NUL byte (got 'al\\x00pha')."]


# 500s the fuzzing led to (some on PostgreSQL only), fixed since: each input gets a clear 4xx.


def _plan_with(**changes: Any) -> Any:
    def make(fleet: Fleet) -> tuple[str, dict[str, Any]]:
        relocation = Relocation.objects.get(name="Notes VM inspected")
        plan = {**relocation_services.plan_suggestion(relocation), **changes}
        return f"/api/v1/relocations/{relocation.pk}/plan/", {"plan": plan}

    return make


def _idle_app(fleet: Fleet) -> tuple[str, dict[str, Any]]:
    catalog.app_create(user=fleet.owner, team=fleet.web.team, slug="idle", base_image=fleet.web.base_image)
    return "/api/v1/apps/idle/resource-requests/", {"memory_mb": 2**70, "cpus": "0.25", "reason": "more"}


def _metrics(query: str) -> Any:
    return lambda fleet: (f"/api/v1/apps/web/metrics/?{query}", None)


REPORTED = [
    pytest.param("get", _metrics("since=999999d"), id="since-far"),
    pytest.param(
        "get",
        _metrics("since=2026-13-45T00:00:00"),
        id="since-date",
    ),
    pytest.param("get", _metrics("step=%C2%B2"), id="step-digit"),
    pytest.param("put", _plan_with(base_image="²"), id="plan-image"),
    pytest.param("put", _plan_with(cpus="1e400"), id="plan-cpus"),
    pytest.param(
        "post",
        lambda fleet: (
            "/api/v1/apps/web/resource-requests/",
            {"memory_mb": 64, "cpus": "1e400", "reason": "x"},
        ),
        id="resize-cpus",
    ),
    pytest.param("post", _idle_app, id="resize-memory"),
    pytest.param(
        "post",
        lambda fleet: ("/api/v1/apps/web/addresses/", {"address": "10.213.9.15", "slot": 2**70}),
        id="address-slot",
    ),
    pytest.param(
        "post",
        lambda fleet: ("/api/v1/apps/", {"slug": "fresh", "team": "al\x00pha", "base_image": 1}),
        id="nul-team",
    ),
    pytest.param(
        "post",
        lambda fleet: ("/api/v1/apps/web/upgrade/", {"base_image": "slipway/busybox\x00:2"}),
        id="nul-image",
    ),
    pytest.param(
        "post",
        lambda fleet: (f"/api/v1/instances/{_running(fleet).pk}/move/", {"host": "h\x002"}),
        id="nul-host",
    ),
    pytest.param(
        "get",
        lambda fleet: ("/api/v1/apps/we\x00b/", None),
        id="nul-slug",
    ),
    pytest.param(
        "put",
        _plan_with(app_slug="no\x00tes"),
        id="nul-plan",
    ),
]


@pytest.mark.parametrize(("method", "request_for"), REPORTED)
def test_reported_inputs_get_a_4xx(fleet: Fleet, method: str, request_for: Any) -> None:
    path, body = request_for(fleet)
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(fleet.owner)
    response = getattr(client, method)(path, body, format="json")
    assert 400 <= response.status_code < 500, response.content
