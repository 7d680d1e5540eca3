"""Host network checks on the lab: a host with ip_forward=1 on a bridged pool fails and takes no
new instance until fix-network (or an audited override); the agent sees the host's own bridges."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError

from apps.accounts.models import Team
from apps.applications import services
from apps.applications.models import BaseImage
from apps.hosts import services as hosts
from apps.hosts.models import Host, HostEvent
from apps.instances.models import Instance
from apps.lab import fleet, netns
from apps.network import services as network_services
from apps.network.models import IPPool


def _forwarding(lab_host: fleet.LabHost, value: int) -> None:
    netns.sh("sysctl", "-q", "-w", f"net.ipv4.ip_forward={value}", netns=lab_host.netns)


@pytest.fixture
def second(
    lab: list[fleet.LabHost], lab_hosts: list[Host], lab_pool: IPPool
) -> Iterator[tuple[Host, fleet.LabHost]]:
    host, lab_host = lab_hosts[1], lab[1]
    _forwarding(lab_host, 1)
    yield host, lab_host
    _forwarding(lab_host, 0)


def _check(host: Host, name: str) -> dict:
    return next(c for c in host.checks if c["name"] == name)


def test_ip_forward_on_fails_the_check_and_the_host_takes_no_instance_until_fixed(
    second: tuple[Host, fleet.LabHost],
    owner: User,
    ops: User,
    alpha: Team,
    busybox: BaseImage,
    remove_apps: list[str],
) -> None:
    host, _ = second
    host = hosts.host_probe(host=host)
    assert host.checks_ok is False
    check = _check(host, "ip_forward off")
    assert not check["ok"]
    assert "net.ipv4.ip_forward=1 on a host bridged onto public" in check["detail"]
    # The agent reads the host's own bridges (its sshd has the host namespace's sysfs).
    bridge = _check(host, "bridge MAC fixed")
    assert bridge["ok"], bridge["detail"]  # docker0: Docker sets its MAC explicitly
    assert "not this network namespace" not in bridge["detail"]
    assert _check(host, "storage driver overlay2")["ok"]

    remove_apps.append("checked")
    app = services.app_create(
        user=owner, team=alpha, slug="checked", base_image=busybox, memory_mb=32, cpus="0.1"
    )
    services.app_scale(user=owner, app=app, instances=2)
    assert set(Instance.objects.filter(app=app).values_list("host__name", flat=True)) == {"lab-h1"}

    fixed = hosts.host_fix_network(host=host, user=ops)
    assert fixed.checks_ok is True
    assert _check(fixed, "ip_forward off")["detail"] == "net.ipv4.ip_forward=0"
    event = HostEvent.objects.get(host=host, action="fix-network", user=ops)
    assert event.user == ops and "net.ipv4.ip_forward=0" in event.detail
    services.app_scale(user=owner, app=app, instances=3)
    assert Instance.objects.get(app=app, slot=2).host == host


def test_an_override_needs_a_reason_and_is_logged(second: tuple[Host, fleet.LabHost], ops: User) -> None:
    host = hosts.host_probe(host=second[0])
    assert not host.takes_instances
    with pytest.raises(ValidationError, match="at least 10 characters"):
        hosts.host_override_checks(host=host, user=ops, reason="because")
    host = hosts.host_override_checks(
        host=host, user=ops, reason="maintenance window, forwarding needed for a test"
    )
    assert host.takes_instances
    host = hosts.host_override_checks(host=host, user=ops, reason="")
    assert not host.takes_instances
    overrides = HostEvent.objects.filter(host=host, action__startswith="override", user=ops)
    assert list(overrides.values_list("action", "detail")) == [
        ("override ended", ""),
        ("override", "maintenance window, forwarding needed for a test"),
    ]


def test_a_bridge_that_takes_its_mac_from_its_ports_fails_until_fixed(
    lab: list[fleet.LabHost], lab_hosts: list[Host], ops: User
) -> None:
    host, lab_host = lab_hosts[0], lab[0]
    ns = lab_host.netns
    netns.sh("ip", "link", "add", "tbr0", "type", "bridge", netns=ns)
    try:
        netns.sh("ip", "link", "add", "tport0", "type", "veth", "peer", "name", "tport1", netns=ns)
        netns.sh("ip", "link", "set", "tport0", "master", "tbr0", netns=ns)
        host = hosts.host_probe(host=host)
        bridge = _check(host, "bridge MAC fixed")
        assert not bridge["ok"]
        assert "tbr0" in bridge["detail"] and "take their MAC from their ports" in bridge["detail"]
        assert not host.takes_instances
        fixed = hosts.host_fix_network(host=host, user=ops)
        assert _check(fixed, "bridge MAC fixed")["ok"]
        assert "tbr0 address" in HostEvent.objects.filter(host=host, user=ops).first().detail  # type: ignore[union-attr]
    finally:
        netns.sh("ip", "link", "del", "tport0", check=False, netns=ns)
        netns.sh("ip", "link", "del", "tbr0", check=False, netns=ns)


def test_the_doctor_reports_each_need_with_its_remedy_and_advice_does_not_stop_a_host(
    lab_hosts: list[Host], lab_pool: IPPool
) -> None:
    host = hosts.host_probe(host=lab_hosts[0])
    names = [c["name"] for c in host.checks]
    for wanted in (
        "Docker engine",
        "cgroups",
        "memory+swap accounting",
        "LXCFS",
        "network public",
        "free disk",
        "clock",
    ):
        assert wanted in names, names
        assert _check(host, wanted)["ok"], _check(host, wanted)
    # The lab's dockerd runs without daemon.json: logs never rotated, no live-restore. Said as
    # advice with the remedy; the host still takes instances.
    rotation = _check(host, "log rotation")
    assert not rotation["ok"] and rotation["required"] is False
    assert '"max-size": "10m"' in rotation["remedy"] and rotation["fix"] == "daemon-json"
    assert host.checks_ok and host.takes_instances


def test_a_missing_pool_network_fails_the_doctor_and_the_fix_makes_it(
    lab: list[fleet.LabHost], lab_hosts: list[Host], lab_pool: IPPool, ops: User, owner: User
) -> None:
    host, lab_host = lab_hosts[1], lab[1]
    # A second pool on a segment of its own, reached through a NIC of its own (Docker puts one
    # macvlan network on an interface): one end of a veth pair here.
    netns.sh("ip", "link", "add", "doc0", "type", "veth", "peer", "name", "doc1", netns=lab_host.netns)
    netns.sh("ip", "addr", "add", "10.214.0.12/24", "dev", "doc0", netns=lab_host.netns)
    netns.sh("ip", "link", "set", "doc0", "up", netns=lab_host.netns)
    pool = IPPool.objects.create(
        name="doctor-test",
        network="10.214.0.0/24",
        gateway="10.214.0.1",
        range_start="10.214.0.100",
        range_end="10.214.0.150",
        docker_network="doctor-test",
    )
    pool.hosts.add(host)
    try:
        host = hosts.host_probe(host=host)
        check = _check(host, "network doctor-test")
        assert not check["ok"] and check["fix"] == "network", check
        assert "Docker network doctor-test does not exist" in check["detail"]
        assert "docker network create --driver macvlan" in check["remedy"]
        assert not host.takes_instances

        with pytest.raises(PermissionDenied):
            network_services.host_networks_fix(host=host, user=owner)
        done = network_services.host_networks_fix(host=host, user=ops)

        assert "created network doctor-test (macvlan on doc0, 10.214.0.0/24)" in done
        made = fleet.docker(
            lab_host, "network", "inspect", "-f", '{{.Driver}} {{index .Options "parent"}}', "doctor-test"
        )
        assert made.stdout.strip() == "macvlan doc0"
        host = hosts.host_probe(host=host)
        assert _check(host, "network doctor-test")["ok"] and host.checks_ok
        assert (
            "created network doctor-test"
            in HostEvent.objects.filter(host=host, action="networks").latest("created_at").detail
        )
        # Run again, it keeps what is there.
        again = network_services.host_networks_fix(host=host, user=ops)
        assert [line.split(" (")[0] for line in again] == ["kept network doctor-test", "kept network public"]
    finally:
        fleet.docker(lab_host, "network", "rm", "doctor-test", check=False)
        netns.sh("ip", "link", "del", "doc0", check=False, netns=lab_host.netns)
