"""The periodic alerts judged on rows as the sweeps, the probe and the worker leave them: memory
near the limit and CPU throttled over the whole window (not one sample), a host unreachable,
a failed operation until a later one succeeds, a request waiting for a lead, an instance down."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from apps.alerts import evaluate
from apps.alerts.models import Alert, Kind
from apps.applications.models import App, BaseImage
from apps.hosts.models import Host
from apps.instances.models import Instance, Operation
from apps.metrics.models import Sample
from apps.resources.models import ResourceRequest

MiB = 1 << 20


@pytest.fixture
def instance(owner: User, image: BaseImage, hosts: list[Host]) -> Instance:
    app = App.objects.create(slug="web", team=owner.memberships.get().team, base_image=image, instances=1)
    return Instance.objects.create(
        app=app, slot=0, host=hosts[0], memory_mb=64, cpus=Decimal("0.5"), state=Instance.State.RUNNING
    )


def _samples(instance: Instance, now: datetime, working_set: list[int], throttled_share: float) -> None:
    """One sample every 10 s up to `now`, the working sets given, throttled that share of time."""
    start = now - timedelta(seconds=10 * (len(working_set) - 1))
    for n, ws in enumerate(working_set):
        Sample.objects.create(
            app=instance.app,
            slot=instance.slot,
            host=instance.host,
            container_id="c" * 64,
            t=start + timedelta(seconds=10 * n),
            cpu_limit=0.5,
            cpu_ns=n * 5_000_000_000,
            throttled_ns=int(n * 10e9 * throttled_share),
            memory_usage=ws,
            memory_limit=64 * MiB,
            working_set=ws,
        )


def _firing(kind: str) -> list[Alert]:
    return list(Alert.objects.filter(kind=kind, state=Alert.State.FIRING))


def test_memory_near_the_limit_through_the_whole_window_fires_and_one_dip_does_not(
    instance: Instance,
) -> None:
    now = timezone.now()
    # 5 minutes at 60 of 64 MiB (94 %), the default rule's 90 % for 5 minutes.
    _samples(instance, now, [60 * MiB] * 32, throttled_share=0.0)
    evaluate.evaluate(now)
    (alert,) = _firing(Kind.MEMORY_HIGH)
    assert alert.summary == "slw-web-0 used at least 94 % of its memory limit (64 MiB) for 5 min"
    assert not _firing(Kind.CPU_THROTTLED)

    # One sample in the window under the threshold: no longer "through the whole window".
    Sample.objects.filter(t=now - timedelta(seconds=60)).update(working_set=20 * MiB)
    evaluate.evaluate(now)
    alert.refresh_from_db()
    assert alert.state == Alert.State.RESOLVED


def test_cpu_throttled_over_the_window_fires(instance: Instance) -> None:
    now = timezone.now()
    _samples(instance, now, [10 * MiB] * 32, throttled_share=0.6)
    evaluate.evaluate(now)
    (alert,) = _firing(Kind.CPU_THROTTLED)
    assert alert.summary == "slw-web-0 was throttled 60 % of the time over 5 min (CPU limit 0.50 CPU)"


def test_too_little_watched_is_not_judged(instance: Instance) -> None:
    now = timezone.now()
    _samples(instance, now, [63 * MiB] * 6, throttled_share=1.0)  # one minute of samples only
    evaluate.evaluate(now)
    assert not _firing(Kind.MEMORY_HIGH) and not _firing(Kind.CPU_THROTTLED)


def test_a_host_unreachable_for_a_minute_fires_for_ops_and_resolves(hosts: list[Host], ops: User) -> None:
    now = timezone.now()
    Host.objects.filter(pk=hosts[1].pk).update(
        state=Host.State.UNREACHABLE, last_seen=now - timedelta(seconds=30)
    )
    evaluate.evaluate(now)
    assert not _firing(Kind.HOST_UNREACHABLE)  # not a minute yet
    evaluate.evaluate(now + timedelta(seconds=40))
    (alert,) = _firing(Kind.HOST_UNREACHABLE)
    assert alert.subject == "h2" and alert.team_id is None
    assert list(alert.notifications.values_list("user__username", flat=True)) == [ops.username]
    Host.objects.filter(pk=hosts[1].pk).update(state=Host.State.ACTIVE)
    evaluate.evaluate(now + timedelta(seconds=50))
    alert.refresh_from_db()
    assert alert.state == Alert.State.RESOLVED


def test_a_failed_operation_fires_once_and_resolves_when_a_later_one_succeeds(instance: Instance) -> None:
    now = timezone.now()
    failed = Operation.objects.create(
        app=instance.app,
        app_slug="web",
        kind=Operation.Kind.SCALE,
        status=Operation.Status.FAILED,
        error="1 of 2 instance(s) failed: no free address",
        finished_at=now,
    )
    evaluate.evaluate(now)
    evaluate.evaluate(now + timedelta(seconds=15))
    (alert,) = Alert.objects.filter(kind=Kind.OPERATION_FAILED)
    assert alert.summary == "Scale of web failed" and "no free address" in alert.detail
    assert alert.notified == 1
    Operation.objects.create(
        app=instance.app, app_slug="web", kind=Operation.Kind.SCALE, status=Operation.Status.SUCCEEDED
    )
    assert Operation.objects.filter(pk=failed.pk).exists()
    evaluate.evaluate(now + timedelta(seconds=30))
    alert.refresh_from_db()
    assert alert.state == Alert.State.RESOLVED


def test_a_request_waiting_four_hours_fires_for_the_team(instance: Instance, owner: User, lead: User) -> None:
    request = ResourceRequest.objects.create(
        app=instance.app,
        requested_by=owner,
        reason="cache",
        old_memory_mb=64,
        old_cpus=Decimal("0.5"),
        memory_mb=128,
        cpus=Decimal("0.5"),
    )
    later = timezone.now() + timedelta(hours=4, minutes=1)
    evaluate.evaluate(later)
    (alert,) = _firing(Kind.REQUEST_WAITING)
    assert alert.summary == f"web's resource request {request.pk} has waited 4.0 h for a lead"
    assert set(alert.notifications.values_list("user__username", flat=True)) == {
        owner.username,
        lead.username,
    }


def test_an_instance_failed_for_a_minute_is_down(instance: Instance) -> None:
    Instance.objects.filter(pk=instance.pk).update(
        state=Instance.State.FAILED, last_error="exited with code 3"
    )
    now = timezone.now()
    evaluate.evaluate(now + timedelta(seconds=30))
    assert not _firing(Kind.INSTANCE_DOWN)
    evaluate.evaluate(now + timedelta(seconds=61))
    (alert,) = _firing(Kind.INSTANCE_DOWN)
    assert alert.summary.startswith("slw-web-0 is down (failed) for 6")
    assert alert.detail == "exited with code 3"
