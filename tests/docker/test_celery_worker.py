"""A real Celery worker process on a real Redis probes a lab host recorded in the test database."""

from __future__ import annotations

import time
from datetime import timedelta
from unittest import mock

from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from apps.applications import services
from apps.applications.models import BaseImage
from apps.hosts import tasks
from apps.hosts.models import Host
from apps.instances import reconcile
from apps.instances.models import Instance, Operation


def test_a_real_worker_probes_a_host(worker: None, lab_hosts: list[Host]) -> None:
    host = lab_hosts[0]
    Host.objects.filter(pk=host.pk).update(last_checked=None, cpus=None)
    tasks.probe.delay(host.pk)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        host.refresh_from_db()
        if host.last_checked is not None:
            break
        time.sleep(0.2)
    assert host.last_checked is not None, (settings.VAR_DIR / "test-worker.log").read_text()[-3000:]
    assert host.state == Host.State.ACTIVE
    assert host.cpus is not None and host.cpus >= 1


def test_a_real_worker_deploys_an_app_submitted_through_the_api(
    worker: None, owner: User, busybox: BaseImage, remove_apps: list[str]
) -> None:
    remove_apps.append("api-e2e")
    api = APIClient()
    api.force_authenticate(owner)
    response = api.post(
        "/api/v1/apps/",
        {
            "slug": "api-e2e",
            "team": "alpha",
            "base_image": busybox.pk,
            "memory_mb": 32,
            "cpus": "0.1",
            "instances": 2,
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    op = Operation.objects.get(app__slug="api-e2e", kind=Operation.Kind.SCALE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        op.refresh_from_db()
        if op.terminal:
            break
        time.sleep(0.1)
    assert op.status == Operation.Status.SUCCEEDED, (
        op.error or (settings.VAR_DIR / "test-worker.log").read_text()[-3000:]
    )
    states = api.get("/api/v1/apps/api-e2e/instances/").json()
    assert [i["state"] for i in states] == ["running", "running"]
    assert all(i["container_id"] for i in states)
    assert api.get(f"/api/v1/operations/{op.pk}/").json()["status"] == "succeeded"


def test_an_operation_left_running_by_a_dead_worker_is_finished_once_by_the_reconcile(
    worker: None, owner: User, busybox: BaseImage, remove_apps: list[str]
) -> None:
    remove_apps.append("orphaned")
    app = services.app_create(
        user=owner,
        team=owner.memberships.get().team,
        slug="orphaned",
        base_image=busybox,
        memory_mb=32,
        cpus="0.1",
    )
    # What a worker killed mid-scale leaves: instance rows placed, the operation claimed, no container.
    with mock.patch("apps.instances.services.operation_send"):
        op = services.app_scale(user=owner, app=app, instances=1)
    Operation.objects.filter(pk=op.pk).update(
        status=Operation.Status.RUNNING, started_at=timezone.now() - timedelta(hours=1), attempts=1
    )
    reconcile.reconcile()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        op.refresh_from_db()
        if op.terminal:
            break
        time.sleep(0.1)
    assert op.status == Operation.Status.SUCCEEDED, op.error
    assert op.attempts == 2
    assert Instance.objects.get(app=app).state == Instance.State.RUNNING
