"""A database dump from an hour before the fleet moved on, restored (docs/backup.md): the
reconcile reports every difference as a finding on the hosts' pages, fails rather than re-runs
the operation that was under way when the dump was taken, and no instance that runs is stopped,
removed or re-created."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection, models
from django.db.models import F
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from apps.applications import services
from apps.applications.models import App
from apps.hosts.models import Host
from apps.instances import reconcile
from apps.instances.models import Finding, Instance, Operation
from apps.instances.services import HELD
from apps.lab import fleet
from tests.helpers import run_op

AN_HOUR = timedelta(hours=1)


def _dump(path: Path) -> None:
    """What docs/backup.md says to take: `pg_dump -Fc` (on SQLite, the file through its backup API)."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        with sqlite3.connect(db["NAME"]) as source, sqlite3.connect(path) as copy:
            source.backup(copy)
        return
    subprocess.run(["pg_dump", "-Fc", "-f", str(path), *_pg(db)], check=True, env=_pg_env(db), timeout=60)


def _shift_every_moment(by: timedelta) -> None:
    """Every date and time in the database moved by `by`: a dump taken in between is the world
    as it was that long ago (operations' heartbeats, queue times, creations, probes...)."""
    for model in django_apps.get_models():
        if model._meta.proxy or not model._meta.managed:
            continue
        fields = [f.attname for f in model._meta.concrete_fields if isinstance(f, models.DateTimeField)]
        if fields:
            model._base_manager.update(**{name: F(name) + by for name in fields})


def _restore(path: Path) -> None:
    """`pg_restore --clean` into the database the portal runs on (nothing else holds it open)."""
    db = connection.settings_dict
    connection.close()
    if db["ENGINE"] == "django.db.backends.sqlite3":
        with sqlite3.connect(path) as copy, sqlite3.connect(db["NAME"]) as target:
            copy.backup(target)
        return
    subprocess.run(
        ["pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction", *_pg(db), str(path)],
        check=True,
        env=_pg_env(db),
        timeout=60,
    )


def _pg(db: dict) -> list[str]:  # type: ignore[type-arg]
    return [
        "-h",
        db["HOST"] or "127.0.0.1",
        "-p",
        str(db["PORT"] or 5432),
        "-U",
        db["USER"],
        "-d",
        db["NAME"],
    ]


def _pg_env(db: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {**os.environ, "PGPASSWORD": db["PASSWORD"] or ""}


def _containers(lab: list[fleet.LabHost], *slugs: str) -> dict[str, tuple[str, str, str]]:
    """name -> (host, container id, status) of the apps' containers on every lab host."""
    seen: dict[str, tuple[str, str, str]] = {}
    for lab_host in lab:
        for slug in slugs:
            listed = fleet.docker(
                lab_host,
                "ps",
                "-a",
                "--no-trunc",
                "--filter",
                f"label=io.slipway.app={slug}",
                "--format",
                "{{.Names}} {{.ID}} {{.State}}",
            ).stdout.split("\n")
            for line in filter(None, listed):
                name, container_id, state = line.split()
                assert name not in seen, f"{name} runs twice: {seen[name]} and on {lab_host.name}"
                seen[name] = (lab_host.name, container_id, state)
    return seen


def _ok(op: Operation) -> None:
    op = run_op(op)
    assert op.status == Operation.Status.SUCCEEDED, op.error


def test_a_dump_from_an_hour_before_the_fleet_moved_on_is_restored_and_the_reconcile_reports_without_touching_what_runs(
    deploy: Callable[..., App],
    owner: User,
    ops: User,
    lab: list[fleet.LabHost],
    lab_hosts: list[Host],
    remove_apps: list[str],
    transactional_db: None,
    tmp_path: Path,
) -> None:
    web = deploy("rstweb", 2)
    gone = deploy("rstgone", 1)
    busy = deploy("rstbusy", 0)
    zero = Instance.objects.select_related("host").get(app=web, slot=0)
    one = Instance.objects.select_related("host").get(app=web, slot=1)
    gone_host = Instance.objects.select_related("host").get(app=gone, slot=0).host
    # A scale under way as the dump is taken: its instance placed, a worker on it, beating.
    under_way = services.app_scale(user=owner, app=busy, instances=1)
    Operation.objects.filter(pk=under_way.pk).update(
        status=Operation.Status.RUNNING, started_at=timezone.now(), heartbeat_at=timezone.now(), attempts=1
    )
    # The dump holds the world as it was an hour ago; the live database goes on from now.
    dump = tmp_path / "slipway.dump"
    _shift_every_moment(-AN_HOUR)
    _dump(dump)
    _shift_every_moment(AN_HOUR)

    # An hour of work later: the scale under way ended (its worker ran it to the end), then
    # another scale of that app; slot 0 of the first moved to the other host, and a release of it;
    # a new app; an app deleted.
    Operation.objects.filter(pk=under_way.pk).update(status=Operation.Status.QUEUED)
    _ok(under_way)
    there = next(h for h in lab_hosts if h.pk != zero.host_id)
    _ok(services.instance_move(user=ops, instance=zero, host=there))
    services.app_update(user=owner, app=web, command=["httpd", "-f", "-p", "8080", "-h", "/srv/data"])
    _ok(Operation.objects.get(app=web, kind=Operation.Kind.RELEASE))
    _ok(services.app_scale(user=owner, app=busy, instances=2))
    deploy("rstnew", 1)
    _ok(services.app_delete(user=owner, app=gone))
    slugs = ("rstweb", "rstnew", "rstbusy", "rstgone")
    before = _containers(lab, *slugs)
    assert sorted(before) == [
        "slw-rstbusy-0",
        "slw-rstbusy-1",
        "slw-rstnew-0",
        "slw-rstweb-0",
        "slw-rstweb-1",
    ]
    assert {state for _, _, state in before.values()} == {"running"}
    assert before["slw-rstweb-0"][0] == there.name

    _restore(dump)
    assert not App.objects.filter(slug="rstnew").exists()
    assert App.objects.filter(slug="rstgone").exists()
    assert Instance.objects.get(app__slug="rstweb", slot=0).host_id == zero.host_id
    assert Instance.objects.filter(app__slug="rstbusy").count() == 1
    in_flight = Operation.objects.get(pk=under_way.pk)
    assert in_flight.status == Operation.Status.RUNNING
    assert in_flight.heartbeat_at is not None and timezone.now() - in_flight.heartbeat_at > AN_HOUR

    report = reconcile.reconcile()
    # Whatever it queued runs, as a worker would run it.
    for op in Operation.objects.filter(status=Operation.Status.QUEUED):
        run_op(op)
    assert report.repaired == {}
    assert sorted(report.held) == sorted(
        [
            f"{zero.host.name}: slw-rstweb-0 was missing; re-create",
            f"{gone_host.name}: slw-rstgone-0 was missing; re-create",
        ]
    )
    # The scale whose worker went silent an hour ago is failed, not run again on the older record.
    assert report.operations_held == [under_way.pk] and report.jobs_held
    in_flight.refresh_from_db()
    assert in_flight.status == Operation.Status.FAILED and in_flight.error == HELD
    assert _containers(lab, *slugs) == before  # same ids, all running, where they were

    found = {(f.host_id, f.kind, f.subject): f.detail for f in Finding.objects.filter(resolved_at=None)}
    hosts = {h.name: h.pk for h in lab_hosts}
    elsewhere = found[(there.pk, Finding.Kind.ELSEWHERE, "slw-rstweb-0")]
    assert f"the database places it on {zero.host.name}" in elsewhere
    held = found[(zero.host_id, Finding.Kind.HELD, "slw-rstweb-0")]
    assert held == f"slw-rstweb-0 was missing; re-create: not done, as it runs on {there.name}."
    released = found[(hosts[before["slw-rstweb-1"][0]], Finding.Kind.NEWER_CONTAINER, "slw-rstweb-1")]
    assert "made from release id" in released and one.container_name == "slw-rstweb-1"
    scaled = found[(hosts[before["slw-rstbusy-1"][0]], Finding.Kind.NEWER_CONTAINER, "slw-rstbusy-1")]
    assert "made for instance id" in scaled
    unknown = found[(hosts[before["slw-rstnew-0"][0]], Finding.Kind.UNKNOWN_CONTAINER, "slw-rstnew-0")]
    assert "rstnew/0" in unknown
    deleted = found[(gone_host.pk, Finding.Kind.HELD, "slw-rstgone-0")]
    assert deleted == (
        "slw-rstgone-0 was missing; re-create: not done, as containers elsewhere in the fleet are "
        "newer than the database."
    )

    # Ops read them on the hosts' pages.
    client = Client()
    client.force_login(ops)
    for host in lab_hosts:
        page = client.get(reverse("hosts:detail", args=[host.pk])).content.decode()
        for host_id, kind, subject in found:
            if host_id == host.pk and subject.startswith("slw-rst"):
                assert subject in page and escape(Finding.Kind(kind).label) in page, (host.name, subject)

    # The next sweep, run by hand as docs/backup.md says, says the same and still touches nothing.
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as ended:
        call_command("reconcile", "--findings", stdout=out, stderr=err)
    assert ended.value.code == 3 and "The fleet is newer than the database" in err.getvalue()
    printed = out.getvalue()
    assert f"held: {zero.host.name}: slw-rstweb-0 was missing; re-create" in printed
    assert f"held: {gone_host.name}: slw-rstgone-0 was missing; re-create" in printed
    assert f"newer than the database: {there.name}: slw-rstweb-0" in printed
    assert f"{there.name}\tInstance's container runs on another host\tslw-rstweb-0\t" in printed
    assert "repair queued" not in printed
    assert not Operation.objects.filter(status=Operation.Status.QUEUED).exists()
    assert _containers(lab, *slugs) == before
