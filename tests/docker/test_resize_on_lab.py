"""Live resize on real containers: docker update without a restart, checked in the cgroup files.

The cgroup files are read here straight from the root namespace (the lab's dockerds put their
containers under /slw-hN/<id>), independently of the agent the worker uses to read them back.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError

from apps.accounts.models import Team
from apps.applications import services as catalog
from apps.applications.models import App, BaseImage
from apps.hosts import gateway
from apps.instances import executor
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from apps.network.models import IPPool
from apps.resources import services
from apps.resources.models import ResourceRequest

MiB = 1024 * 1024


def _lab_host(lab: list[fleet.LabHost], instance: Instance) -> fleet.LabHost:
    return next(h for h in lab if h.name == instance.host.name)


def _cgroup(lab_host: fleet.LabHost, container_id: str, controller: str, name: str) -> str:
    return (fleet.container_cgroup(lab_host, container_id, controller) / name).read_text().strip()


def _started(lab_host: fleet.LabHost, name: str) -> tuple[str, str, int]:
    state = json.loads(fleet.docker(lab_host, "inspect", name).stdout)[0]
    return state["Id"], state["State"]["StartedAt"], state["RestartCount"]


def _run(op: Operation) -> Operation:
    executor.run_operation(op.pk)
    op.refresh_from_db()
    return op


@pytest.fixture
def sized(owner: User, alpha: Team, busybox: BaseImage, lab_pool: IPPool, remove_apps: list[str]) -> App:
    remove_apps.append("sized")
    app = catalog.app_create(
        user=owner, team=alpha, slug="sized", base_image=busybox, memory_mb=64, cpus="0.5", instances=2
    )
    op = _run(Operation.objects.get(app=app))
    assert op.status == Operation.Status.SUCCEEDED, op.error
    return app


def test_memory_and_cpu_change_live_and_are_read_back_from_the_cgroups(
    sized: App, owner: User, lead: User, lab: list[fleet.LabHost]
) -> None:
    instances = list(Instance.objects.filter(app=sized).select_related("host").order_by("slot"))
    before = {}
    for instance in instances:
        lab_host = _lab_host(lab, instance)
        # A process started before the resize must still be there after it.
        fleet.docker(lab_host, "exec", "-d", instance.container_name, "sleep", "4242")
        before[instance.pk] = _started(lab_host, instance.container_name)
        assert _cgroup(lab_host, instance.container_id, "memory", "memory.limit_in_bytes") == str(64 * MiB)

    request = services.request_create(user=owner, app=sized, memory_mb=128, cpus="1", reason="launch day")
    assert request.state == ResourceRequest.State.PENDING
    services.request_decide(user=lead, request=request, approve=True, comment="ok")
    op = _run(Operation.objects.get(app=sized, kind=Operation.Kind.RESIZE))
    assert op.status == Operation.Status.SUCCEEDED, op.error

    request.refresh_from_db()
    assert request.state == ResourceRequest.State.APPLIED
    for instance in instances:
        lab_host = _lab_host(lab, instance)
        assert _started(lab_host, instance.container_name) == before[instance.pk]  # no restart
        assert _cgroup(lab_host, instance.container_id, "memory", "memory.limit_in_bytes") == str(128 * MiB)
        assert _cgroup(lab_host, instance.container_id, "cpu", "cpu.cfs_quota_us") == "100000"
        assert _cgroup(lab_host, instance.container_id, "cpu", "cpu.cfs_period_us") == "100000"
        assert "sleep 4242" in fleet.docker(lab_host, "top", instance.container_name).stdout
        read_back = request.result[instance.container_name]
        assert read_back["ok"] and read_back["read_back"]["memory_bytes"] == 128 * MiB
        instance.refresh_from_db()
        assert (instance.memory_mb, str(instance.cpus)) == (128, "1.00")
    assert [e.action for e in request.events.all()] == ["requested", "approved", "applied"]

    # A new instance gets the new limits.
    _run(catalog.app_scale(user=owner, app=sized, instances=3))
    third = Instance.objects.select_related("host").get(app=sized, slot=2)
    assert _cgroup(_lab_host(lab, third), third.container_id, "memory", "memory.limit_in_bytes") == str(
        128 * MiB
    )


def test_memory_below_what_an_instance_uses_is_refused(
    sized: App, owner: User, lab: list[fleet.LabHost]
) -> None:
    instance = Instance.objects.select_related("host").get(app=sized, slot=0)
    # 40 MiB in tmpfs is charged to the container's memory cgroup and cannot be reclaimed.
    fleet.docker(
        _lab_host(lab, instance), "exec", instance.container_name, "dd", "if=/dev/zero", "of=/dev/shm/ballast",
        "bs=1M", "count=40",
    )  # fmt: skip
    with pytest.raises(
        ValidationError, match=r"32 MiB is below what slw-sized-0 uses now \((4\d) MiB working set, live\)"
    ):
        services.request_create(user=owner, app=sized, memory_mb=32, cpus="0.5", reason="save money")


def test_a_failed_instance_makes_the_request_partial_and_a_retry_does_only_that_one(
    sized: App, owner: User, alpha: Team, lab: list[fleet.LabHost], monkeypatch: pytest.MonkeyPatch
) -> None:
    alpha.auto_approve_memory_mb = 0  # decreases apply at once anyway
    request = services.request_create(user=owner, app=sized, memory_mb=48, cpus="0.5", reason="right-size")
    assert request.state == ResourceRequest.State.APPROVED and request.auto_approved
    # Between the request and its apply, slot 1 fills 56 MiB of tmpfs: the kernel cannot
    # shrink it to 48 MiB, so Docker's update fails for that one instance.
    one = Instance.objects.select_related("host").get(app=sized, slot=1)
    fleet.docker(
        _lab_host(lab, one), "exec", one.container_name, "dd", "if=/dev/zero", "of=/dev/shm/ballast", "bs=1M",
        "count=56",
    )  # fmt: skip
    op = _run(Operation.objects.get(app=sized, kind=Operation.Kind.RESIZE))
    assert op.status == Operation.Status.FAILED
    assert "1 of 2 instance(s) resized; failed: slw-sized-1" in op.error
    request.refresh_from_db()
    assert request.state == ResourceRequest.State.PARTIAL
    assert request.result["slw-sized-0"]["ok"] and not request.result["slw-sized-1"]["ok"]

    fleet.docker(_lab_host(lab, one), "exec", one.container_name, "rm", "/dev/shm/ballast")
    updated: list[str] = []
    real = gateway.container_update

    def spy(host, name, memory_mb, nano_cpus):  # type: ignore[no-untyped-def]
        updated.append(name)
        return real(host, name, memory_mb, nano_cpus)

    monkeypatch.setattr(gateway, "container_update", spy)
    services.request_retry(user=owner, request=request)
    retry = Operation.objects.filter(app=sized, kind=Operation.Kind.RESIZE).order_by("-id").first()
    assert retry is not None
    assert _run(retry).status == Operation.Status.SUCCEEDED, retry.error
    assert updated == ["slw-sized-1"]  # slot 0 was done already
    request.refresh_from_db()
    assert request.state == ResourceRequest.State.APPLIED
    assert _cgroup(_lab_host(lab, one), one.container_id, "memory", "memory.limit_in_bytes") == str(48 * MiB)


class WorkerDied(BaseException):
    """Stands in for SIGKILL: nothing below catches it, so the operation stays 'running'."""


def test_a_worker_lost_mid_apply_is_finished_once_by_the_reconcile(
    sized: App, owner: User, lead: User, lab: list[fleet.LabHost], monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from apps.instances.services import operations_requeue_stale

    request = services.request_create(user=owner, app=sized, memory_mb=96, cpus="0.5", reason="more cache")
    services.request_decide(user=lead, request=request, approve=True)
    op = Operation.objects.get(app=sized, kind=Operation.Kind.RESIZE)
    real = gateway.container_update
    calls: list[str] = []

    def dies_after_the_first(host, name, memory_mb, nano_cpus):  # type: ignore[no-untyped-def]
        calls.append(name)
        if len(calls) > 1:
            raise WorkerDied
        return real(host, name, memory_mb, nano_cpus)

    monkeypatch.setattr(gateway, "container_update", dies_after_the_first)
    with pytest.raises(WorkerDied):
        executor.run_operation(op.pk)
    op.refresh_from_db()
    assert op.status == Operation.Status.RUNNING  # the claim of a worker that is gone
    monkeypatch.setattr(gateway, "container_update", real)

    # The reconcile finds it stale and sends it again; run here as a worker would.
    Operation.objects.filter(pk=op.pk).update(started_at=timezone.now() - timedelta(hours=1))
    assert operations_requeue_stale(3600, running_longer_than_s=900) == 1
    op = _run(op)
    assert op.status == Operation.Status.SUCCEEDED and op.attempts == 2, op.error
    request.refresh_from_db()
    assert request.state == ResourceRequest.State.APPLIED
    assert [e.action for e in request.events.all()].count("applied") == 1
    for instance in Instance.objects.filter(app=sized).select_related("host"):
        lab_host = _lab_host(lab, instance)
        assert _cgroup(lab_host, instance.container_id, "memory", "memory.limit_in_bytes") == str(96 * MiB)
