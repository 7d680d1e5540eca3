"""Draining a lab host: each instance is recreated on the other host with the same static
address and the files of its volume, one at a time, while the app keeps answering."""

from __future__ import annotations

import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User

from apps.accounts.models import Team
from apps.catalog import services
from apps.catalog.models import App, BaseImage
from apps.hosts import drain as draining
from apps.hosts.models import Drain, Host
from apps.instances import executor, placement
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from apps.network.models import IPPool


def _answers(address: str) -> bytes | None:
    try:
        with urllib.request.urlopen(f"http://{address}:8080/index.html", timeout=1) as response:
            return bytes(response.read())
    except OSError:
        return None


@pytest.fixture
def web(
    owner: User,
    alpha: Team,
    busybox: BaseImage,
    lab_pool: IPPool,
    lab: list[fleet.LabHost],
    remove_apps: list[str],
) -> Iterator[App]:
    remove_apps.append("drainweb")
    for lab_host in lab:
        shutil.rmtree(lab_host.volume_root / "drainweb", ignore_errors=True)
    app = services.app_create(
        user=owner, team=alpha, slug="drainweb", base_image=busybox, memory_mb=32, cpus="0.1"
    )
    op = services.app_scale(user=owner, app=app, instances=2)
    executor.run_operation(op.pk)
    op.refresh_from_db()
    assert op.status == Operation.Status.SUCCEEDED, op.error
    yield app
    for lab_host in lab:
        shutil.rmtree(lab_host.volume_root / "drainweb", ignore_errors=True)


def test_draining_a_host_moves_its_instances_with_their_address_and_files(
    web: App, ops: User, owner: User, lab: list[fleet.LabHost], lab_hosts: list[Host], transactional_db: None
) -> None:
    instances = {i.slot: i for i in Instance.objects.filter(app=web).select_related("host")}
    assert {i.host_id for i in instances.values()} == {h.pk for h in lab_hosts}  # spread over both
    leaving = instances[0].host
    by_name = {h.name: h for h in lab}
    # Each instance's host holds its own copy of the volume; the leaving one has a page of its own.
    for instance in instances.values():
        page = by_name[instance.host.name].volume_root / "drainweb" / "index.html"
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

    # Nothing new goes to a draining host; taking instances again ends that.
    assert placement.place(web, 1) == [moved.host]
    draining.host_activate(user=ops, host=leaving)
    leaving.refresh_from_db()
    assert leaving.state == Host.State.ACTIVE
    assert leaving in placement.place(web, 1)
