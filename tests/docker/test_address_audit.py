"""Addresses in use that Slipway did not give out: never handed out, reported, released when free.

The "foreign" holders here are real: containers started by hand with `docker run --ip` on a lab
host's public network, which answer ARP on the segment like any machine would.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import Team
from apps.applications import services
from apps.applications.models import App, BaseImage
from apps.hosts import gateway
from apps.hosts.models import Host
from apps.instances import executor, reconcile
from apps.instances.models import Finding, Instance, Operation
from apps.lab import fleet
from apps.network import services as network_services
from apps.network.models import IPAllocation, IPPool

FIRST = "10.213.200.1"  # the lowest address of the tests' pool range


def _foreign(
    lab: list[fleet.LabHost], host_name: str, name: str, address: str, *, running: bool = True
) -> None:
    lab_host = next(h for h in lab if h.name == host_name)
    verb = ["run", "-d"] if running else ["create"]
    fleet.docker(
        lab_host,
        *verb,
        "--name",
        name,
        "--network",
        "public",
        "--ip",
        address,
        "slipway/busybox:1",
        "sleep",
        "600",
    )


def _app(owner: User, team: Team, image: BaseImage, slug: str, remove_apps: list[str], **extra: Any) -> App:
    remove_apps.append(slug)
    return services.app_create(
        user=owner, team=team, slug=slug, base_image=image, memory_mb=32, cpus="0.1", **extra
    )


def _ops(app: App) -> list[Operation]:
    return list(Operation.objects.filter(app=app).order_by("id"))


def test_the_agent_sees_local_holders_and_arp_answers_from_other_hosts(
    lab: list[fleet.LabHost], lab_pool: IPPool, lab_hosts: list[Host], cleanup_containers: list[str]
) -> None:
    h1, h2 = sorted(lab_hosts, key=lambda h: h.name)
    cleanup_containers.extend(["stray-running", "stray-local", "stray-created"])
    _foreign(lab, h2.name, "stray-running", "10.213.239.10")
    _foreign(lab, h1.name, "stray-local", "10.213.239.11")
    _foreign(lab, h1.name, "stray-created", "10.213.239.13", running=False)
    wanted = ["10.213.239.10", "10.213.239.11", "10.213.239.12", "10.213.239.13", "10.213.0.1"]

    seen = gateway.agent(h1, "arp-probe", network="public", addresses=wanted, wait=0.2)
    # Another host's container answers ARP; this host's own running one is found in Docker (a
    # macvlan parent does not hear its own children); the bridge itself answers too. A stopped
    # container holds nothing yet: it could not start while the address is in use.
    assert seen["answered"]["10.213.239.10"].startswith("02:42:")
    assert seen["local"] == {"10.213.239.11": "stray-local"}
    assert "10.213.0.1" in seen["answered"]
    assert seen["free"] == ["10.213.239.12", "10.213.239.13"]

    # The reconcile's view lists every container with an address configured, running or not.
    assert gateway.agent(h2, "holders", network="public")["holders"]["10.213.239.10"] == "stray-running"
    mine = gateway.agent(h1, "holders", network="public")["holders"]
    assert mine["10.213.239.11"] == "stray-local" and mine["10.213.239.13"] == "stray-created"


def test_an_address_that_answers_arp_is_held_as_foreign_and_the_slot_gets_another(
    lab: list[fleet.LabHost],
    lab_pool: IPPool,
    lab_hosts: list[Host],
    owner: User,
    alpha: Team,
    busybox: BaseImage,
    remove_apps: list[str],
    cleanup_containers: list[str],
) -> None:
    cleanup_containers.append("squatter")
    _foreign(lab, "lab-h2", "squatter", FIRST)
    app = _app(owner, alpha, busybox, "probed", remove_apps)
    op = services.app_scale(user=owner, app=app, instances=2)
    executor.run_operation(op.pk)
    op.refresh_from_db()
    assert op.status == Operation.Status.SUCCEEDED, op.error

    instances = list(Instance.objects.filter(app=app).order_by("slot"))
    assert [i.state for i in instances] == [Instance.State.RUNNING] * 2
    addresses = {i.address for i in instances}
    assert FIRST not in addresses and len(addresses) == 2
    held = IPAllocation.objects.get(pool=lab_pool, address=FIRST)
    # Seen in Docker if the slot landed on the squatter's host, else as an answer to ARP.
    assert held.app is None
    assert held.held_by == "container squatter on lab-h2" or held.held_by.startswith(
        "answers ARP from 02:42:"
    )
    assert all(a.verified_at for a in IPAllocation.objects.filter(app=app))
    finding = Finding.objects.get(kind=Finding.Kind.FOREIGN_ADDRESS, subject=FIRST, resolved_at=None)
    assert "probed/" in finding.detail

    # Nobody can ask for it either, and the message says why.
    with pytest.raises(ValidationError, match="in use on the network outside Slipway"):
        network_services.address_request(user=owner, app=app, address=FIRST)


def test_an_owner_requested_address_in_use_fails_the_instance_with_who_holds_it(
    lab: list[fleet.LabHost],
    lab_pool: IPPool,
    lab_hosts: list[Host],
    owner: User,
    alpha: Team,
    busybox: BaseImage,
    remove_apps: list[str],
    cleanup_containers: list[str],
) -> None:
    cleanup_containers.append("old-vm")
    _foreign(lab, "lab-h1", "old-vm", "10.213.238.5")
    app = _app(owner, alpha, busybox, "keepip", remove_apps, address="10.213.238.5")
    op = services.app_scale(user=owner, app=app, instances=1)
    executor.run_operation(op.pk)
    op.refresh_from_db()
    assert op.status == Operation.Status.FAILED
    assert "10.213.238.5 is in use on the network" in op.error
    instance = Instance.objects.get(app=app)
    assert instance.state == Instance.State.FAILED and "Free it there first" in instance.last_error
    # The owner's address is kept, not swapped for another.
    assert IPAllocation.objects.get(app=app, slot=0).address == "10.213.238.5"

    # Once the old machine lets go, a restart brings the instance up on it.
    fleet.docker(next(h for h in lab if h.name == "lab-h1"), "rm", "-f", "old-vm")
    op = services.instance_action(user=owner, instance=instance, action="restart")
    executor.run_operation(op.pk)
    op.refresh_from_db()
    assert op.status == Operation.Status.SUCCEEDED, op.error
    instance.refresh_from_db()
    assert instance.state == Instance.State.RUNNING and instance.address == "10.213.238.5"


def test_reconcile_reports_foreign_and_idle_addresses_then_resolves_them(
    lab: list[fleet.LabHost],
    ops: User,
    lab_pool: IPPool,
    lab_hosts: list[Host],
    owner: User,
    alpha: Team,
    busybox: BaseImage,
    remove_apps: list[str],
    cleanup_containers: list[str],
) -> None:
    cleanup_containers.append("by-hand")
    _foreign(lab, "lab-h1", "by-hand", "10.213.237.7")
    app = _app(owner, alpha, busybox, "idle", remove_apps)
    reserved = network_services.address_request(user=owner, app=app, address="10.213.237.8")
    IPAllocation.objects.filter(pk=reserved.pk).update(created_at=timezone.now() - timedelta(hours=1))

    report = reconcile.reconcile()
    assert any(
        line.startswith("10.213.237.7: container by-hand on lab-h1") for line in report.addresses.foreign
    )
    held = IPAllocation.objects.get(pool=lab_pool, address="10.213.237.7")
    assert held.app is None and held.held_by == "container by-hand on lab-h1"
    foreign = Finding.objects.get(kind=Finding.Kind.FOREIGN_ADDRESS, subject="10.213.237.7", resolved_at=None)
    assert foreign.host is not None and foreign.host.name == "lab-h1"
    idle = Finding.objects.get(kind=Finding.Kind.IDLE_ADDRESS, subject="10.213.237.8", resolved_at=None)
    assert "idle/0, which has no instance" in idle.detail and idle.host is None

    # Ops see it on the host page, and the held address in the admin.
    ops.is_superuser = True  # the admin's ops, as seed_demo makes them
    ops.save()
    client = Client()
    client.force_login(ops)
    page = client.get(reverse("hosts:detail", args=[foreign.host.pk])).content.decode()
    assert "10.213.237.7" in page and "container by-hand on lab-h1" in page
    admin_page = client.get(
        reverse("admin:network_ipallocation_changelist") + "?app__isempty=1"
    ).content.decode()
    assert "10.213.237.7" in admin_page and "container by-hand on lab-h1" in admin_page

    # The stray goes, the reservation goes: the next sweep releases and resolves.
    fleet.docker(next(h for h in lab if h.name == "lab-h1"), "rm", "-f", "by-hand")
    network_services.address_release(app=app, slot=0)
    report = reconcile.reconcile()
    assert "10.213.237.7" in report.addresses.released
    assert not IPAllocation.objects.filter(address__in=["10.213.237.7", "10.213.237.8"]).exists()
    assert not Finding.objects.filter(subject__in=["10.213.237.7", "10.213.237.8"], resolved_at=None).exists()


def test_an_instance_whose_container_lost_its_address_is_reported_idle(
    lab: list[fleet.LabHost],
    lab_pool: IPPool,
    lab_hosts: list[Host],
    owner: User,
    alpha: Team,
    busybox: BaseImage,
    remove_apps: list[str],
) -> None:
    app = _app(owner, alpha, busybox, "lost", remove_apps)
    op = services.app_scale(user=owner, app=app, instances=1)
    executor.run_operation(op.pk)
    instance = Instance.objects.select_related("host").get(app=app)
    assert instance.state == Instance.State.RUNNING, instance.last_error
    IPAllocation.objects.filter(app=app).update(created_at=timezone.now() - timedelta(hours=1))
    # Someone takes the container off the public network behind the portal's back.
    lab_host = next(h for h in lab if h.name == instance.host.name)
    fleet.docker(lab_host, "network", "disconnect", "public", instance.container_name)

    reconcile.reconcile()
    idle = Finding.objects.get(kind=Finding.Kind.IDLE_ADDRESS, subject=instance.address, resolved_at=None)
    assert f"no container on {instance.host.name} holds it" in idle.detail
