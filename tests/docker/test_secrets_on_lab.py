"""A secret variable on the lab: set through the API, deployed by a real worker, changed by a
release; the containers get its value and nothing else the portal produced holds it: no page,
no API answer (the audit trail's and the activity feed's included), no webhook delivery the
team's receiver got, no row of any table, no line of the worker's, the event watcher's or this
process's logs."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.urls import NoReverseMatch, reverse

from apps.accounts.models import Team
from apps.alerts.models import Webhook
from apps.applications.models import App, BaseImage
from apps.audit.models import AuditEntry
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from tests.helpers import EventWatcher, WebhookReceiver, api_client, eventually, finished
from tests.plain.test_routes import MATRIX

FIRST = "first-Secret-4f1c9e"
SECOND = "second-Secret-b7a203"


def _container_env(lab: list[fleet.LabHost], instance: Instance) -> list[str]:
    lab_host = next(h for h in lab if h.name == instance.host.name)
    out = fleet.docker(lab_host, "inspect", "-f", "{{json .Config.Env}}", instance.container_name).stdout
    return list(json.loads(out))


def _every_page_and_answer(users: list[User], ctx: dict[str, Any]) -> dict[str, str]:
    """What each GET route of the portal answers these users about ctx's objects."""
    seen: dict[str, str] = {}
    for user in users:
        client = Client()
        client.force_login(user)
        for name, (method, kwargs, _codes) in MATRIX.items():
            if method != "get":
                continue
            try:
                url = reverse(name, kwargs=kwargs(ctx))
            except (KeyError, NoReverseMatch):
                continue  # a route about objects this deploy did not make (alerts, relocations)
            answer = client.get(url)
            body = b"".join(answer.streaming_content) if answer.streaming else answer.content  # type: ignore[attr-defined]
            seen[f"{user.username} {url}"] = body.decode(errors="replace")
    return seen


def _every_row() -> str:
    with connection.cursor() as cursor:
        texts = []
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608 - table names from the schema
            texts.append(repr(cursor.fetchall()))
    return "\n".join(texts)


def test_a_secret_reaches_the_containers_and_nothing_else(
    owner: User,
    lead: User,
    ops: User,
    alpha: Team,
    busybox: BaseImage,
    lab: list[fleet.LabHost],
    lab_hosts: list[Any],
    remove_apps: list[str],
    worker: None,
    watcher: EventWatcher,
    receiver: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    logs = {name: settings.VAR_DIR / f"test-{name}.log" for name in ("worker", "watcher")}
    starts = {name: path.stat().st_size for name, path in logs.items()}
    remove_apps.append("vault")
    # The team's lifecycle webhook: every start and stop of the app's containers is POSTed to it.
    hook = api_client(lead).post(
        "/api/v1/webhooks/",
        {"team": "alpha", "name": "lb", "url": receiver.url, "topics": ["alerts", "lifecycle"]},
        format="json",
    )
    assert hook.status_code == 201, hook.content
    api = api_client(owner)
    answers = []
    made = api.post(
        "/api/v1/apps/",
        {
            "slug": "vault",
            "team": "alpha",
            "base_image": busybox.pk,
            "command": ["sh", "-c", "exec sleep 3600"],
            "health_check": "none",
            "memory_mb": 32,
            "cpus": "0.1",
            "instances": 2,
            "env": {"MODE": "a"},
            "secrets": {"DB_PASSWORD": FIRST},
        },
        format="json",
    )
    assert made.status_code == 201, made.content
    answers.append(made.content.decode())
    app = App.objects.get(slug="vault")
    assert finished(Operation.objects.get(app=app, kind=Operation.Kind.SCALE)).status == "succeeded"
    changed = api.patch(
        "/api/v1/apps/vault/", {"secrets": {"DB_PASSWORD": SECOND}, "note": "rotate"}, format="json"
    )
    assert changed.status_code == 200, changed.content
    answers.append(changed.content.decode())
    deploy = Operation.objects.get(app=app, kind=Operation.Kind.RELEASE)
    assert finished(deploy).status == "succeeded", deploy.error

    instances = list(Instance.objects.filter(app=app).select_related("host", "app"))
    assert len(instances) == 2
    for instance in instances:
        env = _container_env(lab, instance)
        assert f"DB_PASSWORD={SECOND}" in env and "MODE=a" in env
        assert not any(FIRST in item for item in env)

    # Two containers started, then both replaced by the release: each said to the webhook.
    eventually(
        lambda: len(receiver.events("instance.started")) >= 4,
        30,
        "the starts of both releases' containers delivered to the webhook",
    )
    deliveries = "\n".join(
        f"{r.path} {r.headers} {r.body.decode(errors='replace')}" for r in receiver.received
    )
    assert "slw-vault-0" in deliveries

    ctx = {
        "app": app,
        "instance": instances[0],
        "host": instances[0].host,
        "operation": deploy,
        "webhook": Webhook.objects.get(pk=hook.json()["id"]),
        "audit": AuditEntry.objects.filter(action="app.create", object_repr="vault").get(),
    }
    pages = _every_page_and_answer([owner, ops], ctx)
    # The pages were really about this app, and named the secret.
    assert "DB_PASSWORD=********" in pages["owner /apps/vault/"]
    assert '"DB_PASSWORD":"********"' in pages["owner /api/v1/apps/vault/"]
    assert "secret changed: DB_PASSWORD" in pages["owner /api/v1/apps/vault/releases/"]
    # The audit trail's API and the activity feeds were among them, about this deploy.
    assert "DB_PASSWORD" in pages[f"ops {reverse('audit-entry-list')}"]
    assert "vault" in pages[f"owner {reverse('activity')}"]
    assert "release 2" in pages[f"owner {reverse('catalog:activity', kwargs={'slug': 'vault'})}"]
    assert (
        "instance.started"
        in pages[f"owner {reverse('webhook-deliveries', kwargs={'pk': ctx['webhook'].pk})}"]
    )
    produced = {
        **pages,
        "API answers to the writes": "\n".join(answers),
        "the webhook deliveries": deliveries,
        **{
            f"the {name}'s log": path.read_bytes()[starts[name] :].decode(errors="replace")
            for name, path in logs.items()
        },
        "this process's log": caplog.text,
        "every row of every table": _every_row(),
    }
    assert produced["the worker's log"], "the worker logged nothing: the search would prove nothing"
    for where, text in produced.items():
        assert FIRST not in text and SECOND not in text, f"a secret's value in {where}"
