"""Static IPs on the lab's bridged public network: reachable from the portal, and sticky."""

from __future__ import annotations

import io
import tarfile
import time
import urllib.error
import urllib.request

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from apps.accounts.models import Team
from apps.applications import releases, services
from apps.applications.models import App, BaseImage
from apps.hosts.models import Host
from apps.instances import executor, reconcile
from apps.instances.models import Instance, Operation
from apps.lab import fleet, netns
from apps.network.models import IPAllocation, IPPool


def _run(op: Operation) -> Operation:
    executor.run_operation(op.pk)
    op.refresh_from_db()
    assert op.status == Operation.Status.SUCCEEDED, op.error
    return op


def _fetch(address: str, path: str = "/index.html", timeout: float = 10) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return urllib.request.urlopen(f"http://{address}:8080{path}", timeout=2).read()
        except urllib.error.HTTPError:
            raise
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _on_host(lab: list[fleet.LabHost], host: Host, name: str) -> str:
    lab_host = next(h for h in lab if h.name == host.name)
    return fleet.docker(
        lab_host, "inspect", "-f", "{{.NetworkSettings.Networks.public.IPAddress}}", name
    ).stdout.strip()


@pytest.fixture
def web(owner: User, alpha: Team, busybox: BaseImage, lab_pool: IPPool, remove_apps: list[str]) -> App:
    remove_apps.append("site")
    app = services.app_create(
        user=owner,
        team=alpha,
        slug="site",
        base_image=busybox,
        memory_mb=32,
        cpus="0.1",
        address="10.213.230.1",
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        body = b"served from a static IP\n"
        info = tarfile.TarInfo("index.html")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    buffer.seek(0)
    releases.release_create(user=owner, app=app, fileobj=buffer, size=len(buffer.getvalue()))
    return app


def test_instances_answer_on_their_static_ips_from_the_portal(
    web: App, owner: User, lab: list[fleet.LabHost]
) -> None:
    _run(services.app_scale(user=owner, app=web, instances=2))
    instances = list(Instance.objects.filter(app=web).select_related("host").order_by("slot"))
    assert instances[0].address == "10.213.230.1"  # the requested one
    assert instances[1].address == "10.213.200.1"  # the pool's lowest free address
    assert instances[0].host != instances[1].host
    for instance in instances:
        assert _on_host(lab, instance.host, instance.container_name) == instance.address
        assert _fetch(instance.address) == b"served from a static IP\n"
        assert instance.endpoint == f"{instance.address}:8080"
    # The API shows each instance's address.
    client = APIClient()
    client.force_authenticate(owner)
    listed = client.get(f"/api/v1/apps/{web.slug}/instances/").json()
    assert [(i["name"], i["address"]) for i in listed] == [
        ("slw-site-0", "10.213.230.1"),
        ("slw-site-1", "10.213.200.1"),
    ]


def test_an_address_survives_restart_stop_start_recreate_daemon_restart_and_a_move(
    web: App, owner: User, ops: User, lab: list[fleet.LabHost], lab_hosts: list[Host]
) -> None:
    _run(services.app_scale(user=owner, app=web, instances=1))
    instance = Instance.objects.select_related("host").get(app=web)
    address = instance.address
    assert address == "10.213.230.1"

    _run(services.instance_action(user=owner, instance=instance, action="restart"))
    _run(services.instance_action(user=owner, instance=instance, action="stop"))
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{address}:8080/index.html", timeout=1)
    _run(services.instance_action(user=owner, instance=instance, action="start"))
    assert _fetch(address)

    services.app_update(user=owner, app=web, env={"RECREATED": "1"})  # a new spec: recreated
    _run(Operation.objects.get(app=web, kind=Operation.Kind.RELEASE))
    instance.refresh_from_db()
    assert _on_host(lab, instance.host, instance.container_name) == address
    assert _fetch(address)

    lab_host = next(h for h in lab if h.name == instance.host.name)
    fleet.stop_dockerd(lab_host)
    fleet.up(lab_host.config, log=lambda _: None)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reconcile.reconcile()
        for op in Operation.objects.filter(app=web, status=Operation.Status.QUEUED):
            executor.run_operation(op.pk)
        try:
            _fetch(address, timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    assert _fetch(address) == b"served from a static IP\n"

    # Ops move it from the app page (the API's POST instances/{id}/move/ takes the same path).
    other = next(h for h in lab_hosts if h.pk != instance.host_id)
    page = Client()
    page.force_login(ops)
    response = page.post("/apps/site/move/", {"instance": instance.pk, "host": other.pk})
    assert response.status_code == 302
    _run(Operation.objects.get(app=web, kind=Operation.Kind.MOVE))
    instance.refresh_from_db()
    assert instance.host == other
    assert _on_host(lab, other, instance.container_name) == address
    assert _fetch(address) == b"served from a static IP\n"  # the volume went with it (same upload)


def test_scaling_down_releases_the_highest_slots_address(web: App, owner: User) -> None:
    _run(services.app_scale(user=owner, app=web, instances=3))
    assert sorted(IPAllocation.objects.filter(app=web).values_list("slot", "address")) == [
        (0, "10.213.230.1"),
        (1, "10.213.200.1"),
        (2, "10.213.200.2"),
    ]
    _run(services.app_scale(user=owner, app=web, instances=2))
    assert list(IPAllocation.objects.filter(app=web).order_by("slot").values_list("slot", flat=True)) == [
        0,
        1,
    ]
    with pytest.raises(OSError):
        urllib.request.urlopen("http://10.213.200.2:8080/", timeout=1)
    _run(services.app_delete(user=owner, app=web))
    assert not IPAllocation.objects.exists()


def test_only_ops_move_instances(web: App, owner: User, lab_hosts: list[Host]) -> None:
    from django.core.exceptions import PermissionDenied

    _run(services.app_scale(user=owner, app=web, instances=1))
    instance = Instance.objects.get(app=web)
    with pytest.raises(PermissionDenied, match="Only ops move instances"):
        services.instance_move(user=owner, instance=instance, host=lab_hosts[0])


def test_a_started_instance_tells_the_segment_where_its_address_now_lives(
    web: App, owner: User, lab: list[fleet.LabHost]
) -> None:
    """Gratuitous ARP once it runs, sent on the side of the operation: a neighbour holding a
    stale entry for the address (the machine that had it before) learns the container's MAC
    without sending it anything."""
    bridge = fleet.LabConfig.from_settings().bridge
    address = "10.213.230.1"
    netns.sh("ip", "neigh", "replace", address, "lladdr", "02:00:00:00:00:99", "dev", bridge, "nud", "stale")
    try:
        _run(services.app_scale(user=owner, app=web, instances=1))
        instance = Instance.objects.select_related("host").get(app=web)
        lab_host = next(h for h in lab if h.name == instance.host.name)
        mac = fleet.docker(
            lab_host,
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.public.MacAddress}}",
            instance.container_name,
        ).stdout.strip()
        assert mac
        deadline = time.monotonic() + 3
        seen = ""
        while time.monotonic() < deadline:
            seen = netns.sh("ip", "neigh", "show", address, "dev", bridge).stdout
            if mac in seen:
                break
            time.sleep(0.05)
        assert mac in seen, seen
    finally:
        netns.sh("ip", "neigh", "del", address, "dev", bridge, check=False)
