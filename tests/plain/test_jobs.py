"""The one pattern for long work (portal.jobs), on drain and relocation rows: one claim per
piece of work, a silent heartbeat releases it, and the reconcile sends lost and waiting work
again. Real workers killed mid-drain and mid-relocation: tests/docker (test_drain_on_lab.py,
test_relocations_on_lab.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from kombu.exceptions import OperationalError

from apps.accounts.models import Team
from apps.fleet.models import DRAIN, Drain
from apps.hosts.models import Host
from apps.relocations.models import RELOCATION_RUN, Relocation
from portal import jobs


@pytest.fixture
def host(db: None) -> Host:
    return Host.objects.create(name="h1", address="10.213.0.91", host_key="ssh-ed25519 AAAA")


@pytest.fixture
def drain(host: Host, ops: User) -> Drain:
    return Drain.objects.create(host=host, total=2, started_by=ops)


def _ago(seconds: float) -> datetime:
    return timezone.now() - timedelta(seconds=seconds)


def test_only_one_delivery_claims_the_work(drain: Drain) -> None:
    assert jobs.claim(DRAIN, drain.pk)
    assert not jobs.claim(DRAIN, drain.pk)  # a second delivery while the first one works
    drain.refresh_from_db()
    assert drain.attempts == 1 and drain.heartbeat_at is not None


def test_work_that_ended_is_not_claimed_again(drain: Drain) -> None:
    Drain.objects.filter(pk=drain.pk).update(state=Drain.State.DONE)
    assert not jobs.claim(DRAIN, drain.pk)


def test_a_claim_whose_heartbeat_went_silent_is_taken_over(drain: Drain, settings: object) -> None:
    Drain.objects.filter(pk=drain.pk).update(heartbeat_at=_ago(3600), attempts=1)
    assert jobs.claim(DRAIN, drain.pk)
    drain.refresh_from_db()
    assert drain.attempts == 2


def test_the_reconcile_sends_lost_and_waiting_work_and_leaves_beating_work_alone(
    drain: Drain, host: Host, alpha: Team, owner: User
) -> None:
    other = Host.objects.create(name="h2", address="10.213.0.92", host_key="ssh-ed25519 AAAA")
    beating = Drain.objects.create(host=other, total=1, heartbeat_at=timezone.now(), queued_at=_ago(3600))
    Drain.objects.filter(pk=drain.pk).update(heartbeat_at=_ago(3600), attempts=1)  # its worker died
    waiting = Relocation.objects.create(
        team=alpha,
        name="vm",
        address="10.213.100.20",
        offered_key="k",
        state=Relocation.State.RUNNING,
        queued_at=_ago(3600),
    )
    fresh = Relocation.objects.create(
        team=alpha,
        name="vm2",
        address="10.213.100.21",
        offered_key="k",
        state=Relocation.State.RUNNING,
        queued_at=timezone.now(),
    )
    with mock.patch("portal.jobs.current_app.send_task") as send_task:
        sent = jobs.resend_lost(waiting_for=60, silent_for=45)
    assert sent == {"drain": [drain.pk], "relocation": [waiting.pk]}
    assert sorted((call.args[0], call.kwargs["args"]) for call in send_task.call_args_list) == sorted(
        [("hosts.drain", (drain.pk,)), ("relocations.run", (waiting.pk,))]
    )
    drain.refresh_from_db()
    # The lost worker's claim is released, and the row says why it runs again.
    assert drain.heartbeat_at is None and drain.error == jobs.LOST
    assert Drain.objects.get(pk=beating.pk).heartbeat_at is not None
    assert fresh.pk not in sent.get("relocation", [])


def test_a_broker_that_is_down_leaves_the_row_waiting_with_a_note(drain: Drain) -> None:
    refused = OperationalError("connection refused")
    with mock.patch("portal.jobs.current_app.send_task", side_effect=refused):
        assert not jobs.send_kind(DRAIN, drain.pk)
    drain.refresh_from_db()
    assert drain.state == Drain.State.RUNNING
    assert "The task queue is unreachable right now (OperationalError)" in drain.error


def test_starting_work_marks_it_waiting_and_sends_it_on_commit(
    drain: Drain, django_capture_on_commit_callbacks: object
) -> None:
    Drain.objects.filter(pk=drain.pk).update(heartbeat_at=_ago(10))
    with (
        mock.patch("portal.jobs.current_app.send_task") as send_task,
        django_capture_on_commit_callbacks(execute=True),  # type: ignore[operator]
    ):
        jobs.start(DRAIN, drain.pk)
        send_task.assert_not_called()  # not before the commit
    send_task.assert_called_once_with("hosts.drain", args=(drain.pk,))
    drain.refresh_from_db()
    assert drain.queued_at is not None and drain.heartbeat_at is None


def test_a_relocation_run_is_claimed_only_while_it_runs(alpha: Team) -> None:
    relocation = Relocation.objects.create(
        team=alpha, name="vm", address="10.213.100.20", offered_key="k", state=Relocation.State.PLANNED
    )
    assert not jobs.claim(RELOCATION_RUN, relocation.pk)
    Relocation.objects.filter(pk=relocation.pk).update(state=Relocation.State.RUNNING)
    assert jobs.claim(RELOCATION_RUN, relocation.pk)
    assert not jobs.claim(RELOCATION_RUN, relocation.pk)
