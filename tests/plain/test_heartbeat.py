"""A worker's heartbeat on the operation it runs, and the reconcile's reading of it: a silent
heartbeat means a lost worker (sent again at once), a beating one is left alone however long
it runs. The worker really killed mid-operation: tests/docker/test_faults_on_lab.py."""

from __future__ import annotations

import time
from datetime import timedelta
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from apps.accounts.models import Team
from apps.applications import services
from apps.applications.models import BaseImage
from apps.instances.models import Operation
from apps.instances.services import operations_requeue_stale
from portal.jobs import Heartbeat


@pytest.fixture
def running(owner: User, alpha: Team, image: BaseImage) -> Operation:
    app = services.app_create(user=owner, team=alpha, slug="web", base_image=image)
    with mock.patch("apps.instances.services.operation_send"):
        op = services.app_scale(user=owner, app=app, instances=0)
    long_ago = timezone.now() - timedelta(minutes=5)
    Operation.objects.filter(pk=op.pk).update(
        status=Operation.Status.RUNNING, started_at=long_ago, heartbeat_at=long_ago, attempts=1
    )
    return op


def test_a_silent_heartbeat_sends_the_operation_again(running: Operation) -> None:
    with mock.patch("apps.instances.services.operation_send") as send:
        assert operations_requeue_stale(3600, running_longer_than_s=900, silent_for_s=60) == 1
    send.assert_called_once_with(running.pk)
    running.refresh_from_db()
    assert running.status == Operation.Status.QUEUED
    assert running.error == "Its worker stopped answering (killed or its machine restarted); it runs again."


def test_a_beating_operation_is_left_alone_however_long_it_runs(running: Operation) -> None:
    Operation.objects.filter(pk=running.pk).update(heartbeat_at=timezone.now())
    with mock.patch("apps.instances.services.operation_send") as send:
        assert operations_requeue_stale(3600, running_longer_than_s=900, silent_for_s=60) == 0
    send.assert_not_called()
    assert Operation.objects.get(pk=running.pk).status == Operation.Status.RUNNING


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_touches_the_row_while_it_runs_and_stops_after(running: Operation) -> None:
    before = Operation.objects.get(pk=running.pk).heartbeat_at
    with Heartbeat(Operation.objects.filter(pk=running.pk), "test", interval=0.05):
        deadline = time.monotonic() + 10
        while Operation.objects.get(pk=running.pk).heartbeat_at == before and time.monotonic() < deadline:
            time.sleep(0.02)
    beat = Operation.objects.get(pk=running.pk).heartbeat_at
    assert beat is not None and before is not None and beat > before
    time.sleep(0.2)
    assert Operation.objects.get(pk=running.pk).heartbeat_at == beat  # stopped with the operation
