"""Faults on the lab fleet, each ending with desired state equal to actual state:

- a Celery worker killed with SIGKILL in the middle of a scale and of a resize (the host it was
  talking to held still with SIGSTOP, so the kill lands mid-operation every time): the reconcile
  sees its heartbeat stop and sends the operation again; it is finished once, never twice;
- a lab host's link cut mid-operation: the operation fails by its deadline with "unreachable",
  the host is marked at once, nothing hangs; link back: the reconcile converges;
- Redis stopped when a user submits: a clear error at once, the change is kept, and it runs by
  itself when Redis is back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.accounts.models import Team
from apps.applications import services as catalog
from apps.applications.models import App, BaseImage
from apps.hosts import services as hosts
from apps.hosts.models import Host
from apps.instances import executor, reconcile
from apps.instances.models import Instance, Operation
from apps.lab import fleet, netns
from apps.network.models import IPPool
from apps.resources import services as resources
from apps.resources.models import ResourceRequest
from tests.conftest import ROOT, TEST_BROKER_URL, _database_url
from tests.helpers import KillableWorker, api_token, eventually, finished, frozen

MiB = 1024 * 1024


def _killable_worker(broker: str = TEST_BROKER_URL, beat: bool = False, **env: str) -> KillableWorker:
    return KillableWorker(broker, _database_url(), beat=beat, **env)


def _answers(address: str) -> bool:
    """Whether the app's HTTP server answers at all (an empty volume answers 404)."""
    try:
        with urllib.request.urlopen(f"http://{address}:8080/", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _containers(lab: list[fleet.LabHost], slug: str) -> list[str]:
    """Every container of the app on every lab host, by name (duplicates would show twice)."""
    names: list[str] = []
    for lab_host in lab:
        out = fleet.docker(
            lab_host, "ps", "-a", "--filter", f"label=io.slipway.app={slug}", "--format", "{{.Names}}"
        )
        names += out.stdout.split()
    return sorted(names)


def _converged(app: App, lab: list[fleet.LabHost]) -> None:
    """Desired equals actual: every row running, one container per row, each answering."""
    instances = list(Instance.objects.filter(app=app).order_by("slot"))
    assert len(instances) == app.instances
    assert all(i.state == Instance.State.RUNNING for i in instances), [
        (i, i.state, i.last_error) for i in instances
    ]
    assert _containers(lab, app.slug) == sorted(i.container_name for i in instances)
    for instance in instances:
        address = str(instance.address)
        eventually(lambda address=address: _answers(address), 10, f"{instance} answering on {address}")  # type: ignore[misc]


@pytest.fixture
def faulty(
    owner: User,
    alpha: Team,
    busybox: BaseImage,
    lab_pool: IPPool,
    lab_hosts: list[Host],
    remove_apps: list[str],
    transactional_db: None,
) -> Iterator[Callable[[str], App]]:
    def make(slug: str) -> App:
        remove_apps.append(slug)
        return catalog.app_create(
            user=owner, team=alpha, slug=slug, base_image=busybox, memory_mb=32, cpus="0.1"
        )

    yield make


def test_a_worker_killed_mid_scale_is_finished_once_by_the_reconcile(
    faulty: Callable[[str], App], owner: User, lab: list[fleet.LabHost], settings: Any
) -> None:
    app = faulty("killscale")
    calm, stuck = lab
    worker = _killable_worker()
    try:
        with frozen(stuck):
            op = catalog.app_scale(user=owner, app=app, instances=4)
            # Two instances go to each host: those on the calm host come up, the others wait.
            eventually(
                lambda: (
                    Instance.objects.filter(
                        app=app, host__name=calm.name, state=Instance.State.RUNNING
                    ).count()
                    == 2
                ),
                60,
                "the calm host's instances running",
            )
            worker.kill()
        op.refresh_from_db()
        assert op.status == Operation.Status.RUNNING and op.attempts == 1  # the dead worker's claim
        worker.stop()
        settings.OPERATION_HEARTBEAT_LOST = 1.0
        time.sleep(1.5)  # the heartbeat has been silent that long
        worker = _killable_worker()
        assert reconcile.reconcile().requeued == 1
        op = finished(op)
        assert op.status == Operation.Status.SUCCEEDED, op.error
        assert op.attempts == 2
        app.refresh_from_db()
        _converged(app, lab)
    finally:
        worker.stop()


def test_a_worker_killed_mid_resize_is_finished_once_by_the_reconcile(
    faulty: Callable[[str], App], owner: User, lead: User, lab: list[fleet.LabHost], settings: Any
) -> None:
    app = faulty("killsize")
    op = catalog.app_scale(user=owner, app=app, instances=4)
    executor.run_operation(op.pk)
    assert Operation.objects.get(pk=op.pk).status == Operation.Status.SUCCEEDED
    calm, stuck = lab
    by_name = {h.name: h for h in lab}

    def limit(instance: Instance) -> str:
        lab_host = by_name[instance.host.name]
        path = fleet.container_cgroup(lab_host, instance.container_id, "memory")
        return (path / "memory.limit_in_bytes").read_text().strip()

    instances = list(Instance.objects.filter(app=app).select_related("host"))
    worker = _killable_worker()
    try:
        with frozen(stuck):
            request = resources.request_create(
                user=owner, app=app, memory_mb=48, cpus="0.1", reason="fault test"
            )
            resources.request_decide(user=lead, request=request, approve=True)
            resize = Operation.objects.get(app=app, kind=Operation.Kind.RESIZE)
            calm_ones = [i for i in instances if i.host.name == calm.name]
            eventually(
                lambda: all(limit(i) == str(48 * MiB) for i in calm_ones),
                60,
                "the calm host's limits applied",
            )
            worker.kill()
        resize.refresh_from_db()
        assert resize.status == Operation.Status.RUNNING
        worker.stop()
        settings.OPERATION_HEARTBEAT_LOST = 1.0
        time.sleep(1.5)
        worker = _killable_worker()
        assert reconcile.reconcile().requeued == 1
        resize = finished(resize)
        assert resize.status == Operation.Status.SUCCEEDED, resize.error
        assert resize.attempts == 2
        request.refresh_from_db()
        assert request.state == ResourceRequest.State.APPLIED
        # Applied once: one "applied" event, not one per run.
        assert [e.action for e in request.events.all()].count("applied") == 1
        for instance in Instance.objects.filter(app=app).select_related("host"):
            assert instance.memory_mb == 48 and limit(instance) == str(48 * MiB)
        app.refresh_from_db()
        _converged(app, lab)
    finally:
        worker.stop()


def test_a_cut_link_fails_the_operation_by_its_deadline_and_the_reconcile_converges_after(
    faulty: Callable[[str], App], owner: User, lab: list[fleet.LabHost], lab_hosts: list[Host]
) -> None:
    app = faulty("cutlink")
    op = catalog.app_scale(user=owner, app=app, instances=2)
    executor.run_operation(op.pk)
    assert Operation.objects.get(pk=op.pk).status == Operation.Status.SUCCEEDED
    far = Instance.objects.select_related("host").get(app=app, host__name=lab[1].name)
    # Short deadlines, as ops would set them for a fleet on one switch.
    worker = _killable_worker(
        DOCKER_TIMEOUT="6",
        SSH_CONNECT_TIMEOUT="3",
        SSH_BANNER_TIMEOUT="3",
        SSH_AUTH_TIMEOUT="3",
        SSH_COMMAND_TIMEOUT="6",
    )
    netns.sh("ip", "link", "set", lab[1].veth, "down")
    try:
        restart = catalog.instance_action(user=owner, instance=far, action="restart")
        restart = finished(restart, 90)  # by its deadline: nothing hangs
        assert restart.status == Operation.Status.FAILED
        assert "unreachable" in restart.error.lower(), restart.error
        host = Host.objects.get(pk=far.host_id)
        assert host.state == Host.State.UNREACHABLE and host.last_error
        assert Instance.objects.get(pk=far.pk).state == Instance.State.PENDING
    finally:
        netns.sh("ip", "link", "set", lab[1].veth, "up")
        worker.stop()
    # Link back: the probe finds the host again and the reconcile converges the instance.
    eventually(
        lambda: hosts.host_probe(host=Host.objects.get(pk=far.host_id)).state == Host.State.ACTIVE,
        30,
        "probe",
    )
    reconcile.reconcile()
    app.refresh_from_db()
    _converged(app, lab)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            *(shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port)),
            *("--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    eventually(lambda: _listening(port), 10, f"redis on {port}")
    return proc


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


@pytest.fixture
def portal_on(transactional_db: None) -> Iterator[Callable[[str], str]]:
    """The portal under daphne with a broker of the test's choosing; yields a starter."""
    procs: list[tuple[subprocess.Popen[bytes], object]] = []

    def start(broker: str) -> str:
        port = _free_port()
        env = dict(os.environ, DATABASE_URL=_database_url(), CELERY_BROKER_URL=broker)
        log = open(settings.VAR_DIR / "test-faults-daphne.log", "ab")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "portal.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append((proc, log))
        eventually(lambda: _listening(port), 30, "daphne")
        return f"http://127.0.0.1:{port}"

    yield start
    for proc, log in procs:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()  # type: ignore[attr-defined]


def test_a_change_submitted_while_redis_is_down_is_kept_and_runs_when_it_is_back(
    faulty: Callable[[str], App], owner: User, lab: list[fleet.LabHost], portal_on: Callable[[str], str]
) -> None:
    import requests

    app = faulty("noredis")
    port = _free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    redis = _redis(port)
    base = portal_on(broker)
    # The worker's beat runs the reconcile every 2 s: nothing but the system itself resends.
    worker = _killable_worker(
        broker=broker,
        beat=True,
        RECONCILE_INTERVAL="2",
        OPERATION_REQUEUE_AFTER="1",
        HOST_PROBE_INTERVAL="3600",
        METRICS_INTERVAL="3600",
        METRICS_ROLLUP_INTERVAL="3600",
    )
    token = api_token(owner)
    try:
        redis.terminate()
        redis.wait(timeout=10)
        response = requests.post(
            f"{base}/api/v1/apps/{app.slug}/scale/",
            json={"instances": 2},
            headers={"Authorization": f"Token {token}"},
            timeout=30,
        )
        # Accepted at once and kept: the row is the job; the user is told why it waits.
        assert response.status_code == 202, response.text
        op = Operation.objects.get(pk=response.json()["id"])
        assert op.status == Operation.Status.QUEUED
        assert "The task queue is unreachable right now" in op.error
        assert "will run when it is back" in op.error
        page = requests.get(
            f"{base}/api/v1/operations/{op.pk}/", headers={"Authorization": f"Token {token}"}, timeout=10
        ).json()
        assert page["status"] == "queued" and "unreachable" in page["error"]

        redis = _redis(port)  # back, on the same address
        op = finished(op, 120)
        assert op.status == Operation.Status.SUCCEEDED, op.error
        app.refresh_from_db()
        _converged(app, lab)
    finally:
        worker.stop()
        if redis.poll() is None:
            redis.terminate()
            redis.wait(timeout=10)
