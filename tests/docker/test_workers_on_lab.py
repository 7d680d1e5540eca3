"""Several workers: two real Celery worker processes (started with the worker unit's command
line, deploy/slipway-worker@.service) carry out a mixed load on the lab at once: a scale up of
one app, a live resize of another and the drain of a host holding instances of both. Every job
is sent twice, so both workers get copies; each is done once. Meanwhile a base image version is
published: the image builder (deploy/slipway-builder.service) takes it from its own queue, and
neither worker sees it."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.applications import services
from apps.applications.models import App, BaseImage, BuildState
from apps.fleet import drain as draining
from apps.fleet.models import DRAIN, Drain
from apps.hosts.models import Host
from apps.images import publish
from apps.instances.models import Instance, Operation
from apps.instances.services import operation_send
from apps.lab import fleet
from apps.resources import services as resources
from apps.resources.models import ResourceRequest
from portal import jobs
from portal.celery import app as celery_app
from tests.conftest import SHARED_WORKERS, TEST_BROKER_URL, _database_url
from tests.deploy_support import unit_command
from tests.helpers import end_all, eventually

SLUGS = ("mixscale", "mixsize")


@pytest.fixture
def workers(transactional_db: None) -> Iterator[dict[str, Path]]:
    """Two workers of two processes each, named worker1 and worker2, and the image builder, on
    the test database and broker; yields their logs by name."""
    assert not any(p.poll() is None for p in SHARED_WORKERS), "a module worker would take this test's tasks"
    with contextlib.suppress(Exception):
        celery_app.control.purge()  # tasks earlier tests queued name rows of their own databases
    env = dict(os.environ, DATABASE_URL=_database_url(), CELERY_BROKER_URL=TEST_BROKER_URL)
    commands = {
        f"worker{n}": unit_command(
            "slipway-worker@.service",
            **{"worker%i@%%h": f"worker{n}@%h", "--concurrency 4": "--concurrency 2"},
        )
        for n in (1, 2)
    }
    commands["builder"] = unit_command(
        "slipway-builder.service", **{"builder@%%h": "builder@%h", "--concurrency 2": "--concurrency 1"}
    )
    procs, files, logs = [], [], {}
    try:
        for name, argv in commands.items():
            path = settings.VAR_DIR / f"test-{name}.log"
            log = open(path, "wb")  # noqa: SIM115 - closed below
            files.append(log)
            logs[name] = path
            procs.append(
                subprocess.Popen(argv, cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
        for path in logs.values():
            eventually(_ready(path), 60, f"{path.name}: the worker to be ready")
        yield logs
    finally:
        end_all(procs)
        for log in files:
            log.close()


def _ready(path: Path) -> Callable[[], bool]:
    return lambda: "ready." in path.read_text()


@pytest.fixture
def new_version(busybox: BaseImage, lab: list[fleet.LabHost]) -> Iterator[BaseImage]:
    """A busybox version to publish; taken off the lab hosts afterwards."""
    version = BaseImage.objects.create(
        name=busybox.name, tag="mixed", runtime=busybox.runtime, recipe=busybox.recipe, state=BuildState.DRAFT
    )
    yield version
    for lab_host in lab:
        fleet.docker(lab_host, "rmi", "-f", version.reference, check=False)


def _containers(lab: list[fleet.LabHost]) -> list[str]:
    names = []
    for lab_host in lab:
        for slug in SLUGS:
            out = fleet.docker(
                lab_host, "ps", "-a", "--filter", f"label=io.slipway.app={slug}", "--format", "{{.Names}}"
            )
            names += out.stdout.split()
    return sorted(names)


def test_two_workers_carry_out_a_scale_a_resize_and_a_drain_at_once_each_once_and_the_builder_a_publish(
    deploy: Callable[..., App],
    owner: User,
    lead: User,
    ops: User,
    lab: list[fleet.LabHost],
    lab_hosts: list[Host],
    new_version: BaseImage,
    workers: dict[str, Path],
) -> None:
    scaled, sized = (deploy(slug) for slug in SLUGS)  # two instances each, one on each host
    leaving = Instance.objects.select_related("host").get(app=scaled, slot=0).host
    assert Instance.objects.filter(host=leaving).count() == 2  # one of each app

    # At once: every job is sent on commit, and then once more.
    scale = services.app_scale(user=owner, app=scaled, instances=4)
    request = resources.request_create(user=owner, app=sized, memory_mb=48, cpus="0.2", reason="launch")
    if request.state == ResourceRequest.State.PENDING:
        resources.request_decide(user=lead, request=request, approve=True, comment="ok")
    resize = Operation.objects.get(app=sized, kind=Operation.Kind.RESIZE)
    drain = draining.host_drain(user=ops, host=leaving)
    publish.image_publish(user=ops, image=new_version)
    for op in (scale, resize):
        assert operation_send(op.pk)
    assert jobs.send_kind(DRAIN, drain.pk)
    assert jobs.send_kind(publish.PUBLISH, new_version.pk)

    drain = eventually(
        lambda: Drain.objects.exclude(state=Drain.State.RUNNING).filter(pk=drain.pk).first(),
        240,
        "the drain to end",
        every=0.3,
    )
    assert drain.state == Drain.State.DONE, drain.error
    assert drain.attempts == 1, drain.log
    apps = [scaled, sized]
    eventually(
        lambda: not Operation.objects.filter(app__in=apps).exclude(status__in=Operation.TERMINAL).exists(),
        240,
        "every operation to end",
        every=0.3,
    )

    # Each operation succeeded at its first claim, whichever worker got which copy.
    operations = list(Operation.objects.filter(app__in=apps).order_by("pk"))
    failed = [
        (op.kind, op.app_slug, op.error) for op in operations if op.status != Operation.Status.SUCCEEDED
    ]
    assert not failed
    assert {op.attempts for op in operations} == {1}
    moves = [op for op in operations if op.kind == Operation.Kind.MOVE]
    # Each instance that was on the host moved once: the two there before, and those the
    # scale had placed there before the drain began.
    assert len(moves) >= 2 and len({op.instance_id for op in moves}) == len(moves) == drain.done, drain.log
    # Both workers took work: the copies went to both.
    for name in ("worker1", "worker2"):
        assert "Task instances.run_operation[" in workers[name].read_text(), f"{name} took no operation"

    # The publish went to the builder alone, both copies, and was done once.
    version = eventually(
        lambda: (
            BaseImage.objects.exclude(state=BuildState.BUILDING)
            .exclude(state=BuildState.LOADING)
            .filter(pk=new_version.pk)
            .first()
        ),
        120,
        "the publish to end",
        every=0.3,
    )
    assert version.state == BuildState.PUBLISHED, version.build_error
    assert version.attempts == 1 and version.hosts.exists()
    built = workers["builder"].read_text()
    assert len(re.findall(r"Task catalog\.publish_image\[\S+\] received", built)) == 2
    assert "Task instances." not in built
    for name in ("worker1", "worker2"):
        assert "Task catalog.publish_image[" not in workers[name].read_text(), f"{name} took the publish"

    # What runs on the hosts is exactly what the database says: no container twice, none left.
    live = Instance.objects.filter(app__in=apps).select_related("host")
    assert {app.slug: live.filter(app=app).count() for app in apps} == {"mixscale": 4, "mixsize": 2}
    assert {i.state for i in live} == {Instance.State.RUNNING}
    assert not live.filter(host=leaving).exists()
    assert _containers(lab) == sorted(i.container_name for i in live)
    sized.refresh_from_db()
    assert sized.memory_mb == 48
