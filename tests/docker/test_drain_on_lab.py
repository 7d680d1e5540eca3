"""Draining a lab host: each instance is recreated on the other host with the same static
address and the files of its volume, one at a time, while the app keeps answering."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.utils import timezone

from apps.applications import services
from apps.applications.models import App, RetainedVolume
from apps.fleet import drain as draining
from apps.fleet import spread
from apps.fleet.models import DRAIN, Drain
from apps.hosts.models import Host
from apps.instances import executor, placement, reconcile
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from portal import jobs
from tests.conftest import TEST_BROKER_URL, _database_url
from tests.helpers import KillableWorker, eventually, frozen, run_op


def _answers(address: str) -> bytes | None:
    try:
        with urllib.request.urlopen(f"http://{address}:8080/index.html", timeout=1) as response:
            return bytes(response.read())
    except OSError:
        return None


@pytest.fixture
def web(deploy: Callable[..., App], owner: User) -> App:
    """Two instances serving their host's persistent directory: what each wrote on its host."""
    app = deploy("drainweb")
    services.app_update(user=owner, app=app, command=["httpd", "-f", "-p", "8080", "-h", "/srv/data"])
    op = Operation.objects.filter(app=app, kind=Operation.Kind.RELEASE).get()
    executor.run_operation(op.pk)
    op.refresh_from_db()
    assert op.status == Operation.Status.SUCCEEDED, op.error
    return app


def test_draining_a_host_moves_its_instances_with_their_address_and_files(
    web: App, ops: User, owner: User, lab: list[fleet.LabHost], lab_hosts: list[Host], transactional_db: None
) -> None:
    instances = {i.slot: i for i in Instance.objects.filter(app=web).select_related("host")}
    assert {i.host_id for i in instances.values()} == {h.pk for h in lab_hosts}  # spread over both
    leaving = instances[0].host
    by_name = {h.name: h for h in lab}
    # Each instance's host holds its own persistent directory; the leaving one has a page of its own.
    for instance in instances.values():
        page = by_name[instance.host.name].volume_root / "drainweb" / "state" / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(f"served from {instance.host.name}\n")
    # Just started: each answers once its gratuitous ARP has reached the segment.
    deadline = time.monotonic() + 10
    while not all(_answers(str(i.address)) for i in instances.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_answers(str(i.address)) for i in instances.values())

    with pytest.raises(Exception, match="Only ops"):
        draining.host_drain(user=owner, host=leaving)
    drain = draining.host_drain(user=ops, host=leaving)
    assert drain.total == 1
    leaving.refresh_from_db()
    assert leaving.state == Host.State.DRAINING
    # The app answers throughout: a probe polls both addresses while the drain runs.
    down: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            if not any(_answers(str(i.address)) for i in instances.values()):
                down.append(time.monotonic())
            stop.wait(0.05)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        draining.run(drain.pk)
    finally:
        stop.set()
        thread.join()
    drain.refresh_from_db()
    assert drain.state == Drain.State.DONE, drain.error
    assert drain.done == 1 and "slw-drainweb-0 →" in drain.log
    assert not down, "both instances were down at once"

    moved = Instance.objects.get(pk=instances[0].pk)
    assert moved.host != leaving and moved.state == Instance.State.RUNNING
    assert moved.address == instances[0].address
    # The files the instance had on the leaving host came with it.
    assert _answers(str(moved.address)) == f"served from {leaving.name}\n".encode()
    op = Operation.objects.filter(app=web, kind=Operation.Kind.MOVE).latest("created_at")
    assert op.params["placement"][0]["host"] == moved.host.name and op.params["placement"][0]["reason"]
    assert not Instance.objects.filter(host=leaving).exists()
    # Its files went with it: nothing of the app is left on the drained host's disk.
    assert not (by_name[leaving.name].volume_root / "drainweb").exists()
    assert not RetainedVolume.objects.filter(app_slug="drainweb").exists()

    # Nothing new goes to a draining host; taking instances again ends that.
    assert placement.place(web, 1) == [moved.host]
    draining.host_activate(user=ops, host=leaving)
    leaving.refresh_from_db()
    assert leaving.state == Host.State.ACTIVE
    assert leaving in placement.place(web, 1)

    # Both instances now sit on one host, and ops are told, with where one would go.
    [stacked] = spread.stacked()
    assert (stacked.app, stacked.host, stacked.instances, stacked.target) == (web, moved.host, 2, leaving)
    with pytest.raises(Exception, match="Only ops"):
        spread.respread(user=owner, app=web)
    op = run_op(spread.respread(user=ops, app=web))
    assert op.status == Operation.Status.SUCCEEDED, op.error
    assert spread.stacked() == [] and spread.moving() == []
    with pytest.raises(ValidationError, match="not all on one host"):
        spread.respread(user=ops, app=web)
    back = Instance.objects.get(pk=instances[1].pk)
    assert back.host == leaving and back.state == Instance.State.RUNNING
    assert back.address == instances[1].address
    # It serves the app's current files, copied from where it was.
    assert eventually(lambda: _answers(str(back.address)), 10, "the moved instance to answer") == (
        f"served from {leaving.name}\n".encode()
    )


def _spread_over_both(web: App, owner: User) -> tuple[Host, list[Instance]]:
    """Four instances, two on each host; the host of slot 0 and its instances."""
    run_op(services.app_scale(user=owner, app=web, instances=4))
    instances = list(Instance.objects.filter(app=web).select_related("host").order_by("slot"))
    leaving = instances[0].host
    on_it = [i for i in instances if i.host_id == leaving.pk]
    assert len(on_it) == 2, [(i.slot, i.host.name) for i in instances]
    return leaving, on_it


def _moved_once(web: App, leaving: Host, moved: list[Instance], lab: list[fleet.LabHost]) -> None:
    moves = Operation.objects.filter(app=web, kind=Operation.Kind.MOVE)
    assert sorted(moves.values_list("instance_id", flat=True)) == sorted(i.pk for i in moved)
    assert {op.status for op in moves} == {Operation.Status.SUCCEEDED}, [op.error for op in moves]
    assert not Instance.objects.filter(host=leaving).exists()
    live = Instance.objects.filter(app=web)
    assert {i.state for i in live} == {Instance.State.RUNNING}
    # One container per instance, on the fleet as a whole.
    names = []
    for lab_host in lab:
        out = fleet.docker(
            lab_host, "ps", "-a", "--filter", "label=io.slipway.app=drainweb", "--format", "{{.Names}}"
        )
        names += out.stdout.split()
    assert sorted(names) == sorted(i.container_name for i in live)


def _drain_ended(drain: Drain, seconds: float = 180) -> Drain:
    return eventually(
        lambda: Drain.objects.exclude(state=Drain.State.RUNNING).filter(pk=drain.pk).first(),
        seconds,
        "the drain to end",
        every=0.2,
    )


def test_a_drain_delivered_twice_moves_each_instance_once(
    web: App,
    ops: User,
    owner: User,
    lab: list[fleet.LabHost],
    lab_hosts: list[Host],
    own_worker: KillableWorker,
) -> None:
    leaving, on_it = _spread_over_both(web, owner)
    drain = draining.host_drain(user=ops, host=leaving)  # sent once on commit
    assert jobs.send_kind(DRAIN, drain.pk)  # and once more: the worker runs two tasks at once
    drain = _drain_ended(drain)
    assert drain.state == Drain.State.DONE, drain.error
    assert drain.attempts == 1  # one delivery claimed it; the other found it taken
    assert drain.done == 2
    _moved_once(web, leaving, on_it, lab)


def test_a_worker_killed_mid_drain_is_taken_over_and_moves_each_instance_once(
    web: App,
    ops: User,
    owner: User,
    lab: list[fleet.LabHost],
    lab_hosts: list[Host],
    transactional_db: None,
) -> None:
    leaving, on_it = _spread_over_both(web, owner)
    target = next(h for h in lab if h.name != leaving.name)
    worker = KillableWorker(TEST_BROKER_URL, _database_url())
    try:
        # The first move's container waits on the target's dockerd held still: the kill lands
        # in the middle of the drain, with a move under way.
        with frozen(target):
            drain = draining.host_drain(user=ops, host=leaving)
            eventually(
                lambda: Operation.objects.filter(
                    app=web, kind=Operation.Kind.MOVE, status=Operation.Status.RUNNING
                ).exists(),
                60,
                "the first move under way",
            )
            worker.kill()
        worker.stop()
        drain.refresh_from_db()
        assert drain.state == Drain.State.RUNNING and drain.attempts == 1 and drain.done == 0
        # Both heartbeats (the drain's, the move's) silent for an hour: the rows are set back
        # rather than waiting out OPERATION_HEARTBEAT_LOST.
        an_hour_ago = timezone.now() - timedelta(hours=1)
        Drain.objects.filter(pk=drain.pk).update(heartbeat_at=an_hour_ago)
        Operation.objects.filter(app=web, status=Operation.Status.RUNNING).update(heartbeat_at=an_hour_ago)
        worker = KillableWorker(TEST_BROKER_URL, _database_url())
        report = reconcile.reconcile()
        assert report.jobs_resent.get("drain") == [drain.pk]
        assert report.requeued == 1  # the move the dead worker was in
        drain = _drain_ended(drain)
    finally:
        worker.stop()
    assert drain.state == Drain.State.DONE, drain.error
    assert drain.attempts == 2
    assert drain.done == 2 and "taken over from a lost worker" in drain.log, drain.log
    _moved_once(web, leaving, on_it, lab)
