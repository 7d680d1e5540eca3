"""The doctor's fixes that touch the host's own services, on the lab: LXCFS stopped is started
again by Prepare (and the instances it stopped under read their /proc again), and dockerd's
settings (log rotation, live-restore) are written and dockerd restarted only on ops' word, with
its instances running on through the restart. The lab hosts' stand-in for systemctl starts the
daemons as `lab up` does; everything else is the path a real server takes."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError

from apps.applications.models import App
from apps.fleet import prepare
from apps.fleet.models import Preparation
from apps.hosts import services as hosts
from apps.hosts.models import Host, HostEvent
from apps.instances.models import Instance
from apps.lab import fleet, netns
from apps.network.models import IPPool
from tests.helpers import eventually
from tests.helpers import plain_dockerd as plain

SLUG = "svcweb"


def _answers(address: str | None) -> bool:
    """The instance's server takes a connection on its static address."""
    try:
        with socket.create_connection((address or "", 8080), timeout=2):
            return True
    except OSError:
        return False


def _check(host: Host, name: str) -> dict:
    return next(c for c in host.checks if c["name"] == name)


@pytest.fixture
def web(deploy: Callable[..., App]) -> App:
    return deploy(SLUG)  # one instance on each lab host


@pytest.fixture
def plain_dockerd(lab: list[fleet.LabHost]) -> Iterator[fleet.LabHost]:
    with plain(lab[1]) as lab_host:
        yield lab_host


def _on(app: App, host: Host) -> Instance:
    return Instance.objects.get(app=app, host=host)


def _started(lab_host: fleet.LabHost, instance: Instance) -> str:
    return fleet.docker(
        lab_host,
        "inspect",
        "-f",
        "{{.State.Pid}} {{.State.StartedAt}} {{.State.Running}}",
        instance.container_name,
    ).stdout.strip()


def test_dockerd_settings_wait_for_ops_then_dockerd_restarts_under_running_instances(
    plain_dockerd: fleet.LabHost,
    web: App,
    lab_hosts: list[Host],
    ops: User,
) -> None:
    lab_host, host = plain_dockerd, lab_hosts[1]
    instance = _on(web, host)
    before = _started(lab_host, instance)
    assert before.endswith("true")
    # Just started: its address reaches the segment within moments (longer on a busy machine).
    eventually(lambda: _answers(instance.address) or None, 10, f"{instance.container_name} answering")
    host = hosts.host_probe(host=host)
    for name in ("log rotation", "live-restore"):
        check = _check(host, name)
        assert not check["ok"] and check["fix"] == "daemon-json" and check["required"] is False, check
    assert host.dockerd_settings_due and host.takes_instances  # advice: the host still takes instances

    # Prepare alone does not restart dockerd: the step says what it would write, and waits.
    unasked = prepare.host_prepare(user=ops, host=host)
    prepare.run(unasked.pk)
    unasked.refresh_from_db()
    state, detail = next((s["state"], s["detail"]) for s in unasked.steps if s["name"] == "dockerd settings")
    assert unasked.state == Preparation.State.READY
    assert state == "skipped" and "waits for ops to confirm a dockerd restart" in detail, detail
    assert "live-restore, log-opts" in detail
    assert json.loads(lab_host.docker_config.read_text()) == {}
    assert _started(lab_host, instance) == before

    # With ops' word: written, reloaded (live-restore on), restarted; the instance never stops.
    docker_pid = netns.pid_from(lab_host.docker_pidfile)
    asked = prepare.host_prepare(user=ops, host=host, restart_dockerd=True)
    prepare.run(asked.pk)
    asked.refresh_from_db()
    steps = {s["name"]: (s["state"], s["detail"]) for s in asked.steps}
    assert asked.state == Preparation.State.READY, (asked.error, steps)
    state, detail = steps["dockerd settings"]
    assert state == "done" and "1 of 1 running containers kept running" in detail, detail
    assert netns.pid_from(lab_host.docker_pidfile) != docker_pid  # a new dockerd
    assert _started(lab_host, instance) == before  # same process, never restarted
    assert _answers(instance.address)
    written = json.loads(lab_host.docker_config.read_text())
    assert written == {"live-restore": True, "log-opts": {"max-file": "3", "max-size": "10m"}}
    assert json.loads(lab_host.docker_config.with_name("daemon.json.slipway-backup").read_text()) == {}
    host.refresh_from_db()
    assert _check(host, "log rotation")["ok"] and _check(host, "live-restore")["ok"]
    assert not host.dockerd_settings_due
    event = HostEvent.objects.filter(host=host, action="dockerd settings").get()
    assert event.user == ops and "dockerd reloaded and restarted" in event.detail

    # Done already: nothing is written or restarted again.
    docker_pid = netns.pid_from(lab_host.docker_pidfile)
    said = hosts.docker_settings(host=host, user=ops, restart=True)
    assert "has log rotation and live-restore already" in said
    assert netns.pid_from(lab_host.docker_pidfile) == docker_pid


def test_dockerd_settings_that_dockerd_would_refuse_change_nothing(
    plain_dockerd: fleet.LabHost, lab_hosts: list[Host], lab_pool: IPPool, ops: User
) -> None:
    lab_host, host = plain_dockerd, lab_hosts[1]
    docker_pid = netns.pid_from(lab_host.docker_pidfile)
    # A setting the command line has too: dockerd would not start at all. Refused before writing.
    clashing = '{"storage-driver": "overlay2"}\n'
    lab_host.docker_config.write_text(clashing)
    with pytest.raises(ValidationError, match="command line sets storage-driver"):
        hosts.docker_settings(host=host, user=ops, restart=True)
    assert lab_host.docker_config.read_text() == clashing

    # A file dockerd refuses when it reloads it: nothing restarted, the file put back as it was.
    refused = '{"max-concurrent-downloads": -1}\n'
    lab_host.docker_config.write_text(refused)
    with pytest.raises(ValidationError, match=r"did not take the new .* on reload"):
        hosts.docker_settings(host=host, user=ops, restart=True)
    assert lab_host.docker_config.read_text() == refused
    assert netns.pid_from(lab_host.docker_pidfile) == docker_pid
    event = HostEvent.objects.filter(host=host, action="dockerd settings failed").latest("pk")
    assert "nothing was restarted" in event.detail


def test_lxcfs_stopped_fails_the_doctor_and_prepare_starts_it_under_running_instances(
    web: App, lab: list[fleet.LabHost], lab_hosts: list[Host], ops: User
) -> None:
    lab_host, host = lab[1], lab_hosts[1]
    instance = _on(web, host)
    meminfo = ["head", "-1", "/proc/meminfo"]
    assert fleet.docker(lab_host, "exec", instance.container_name, *meminfo).stdout.startswith("MemTotal:")
    netns.terminate(netns.pid_from(lab_host.lxcfs_pidfile) or 0)
    try:
        host = hosts.host_probe(host=host)
        check = _check(host, "LXCFS")
        assert not check["ok"] and check["fix"] == "lxcfs", check
        assert "systemctl enable --now lxcfs" in check["remedy"]
        assert not host.takes_instances  # required: instances would see the host's memory
        assert host in prepare.wanting()  # the beat would prepare it too
        dead = fleet.docker(lab_host, "exec", instance.container_name, *meminfo, check=False)
        assert dead.returncode != 0  # its LXCFS files died with LXCFS

        preparation = prepare.host_prepare(user=ops, host=host)
        prepare.run(preparation.pk)

        preparation.refresh_from_db()
        steps = {s["name"]: (s["state"], s["detail"]) for s in preparation.steps}
        assert preparation.state == Preparation.State.READY, (preparation.error, steps)
        state, detail = steps["start LXCFS"]
        assert state == "done" and "started lxcfs" in detail and "re-bound its files in 1 running" in detail
        host.refresh_from_db()
        assert _check(host, "LXCFS")["ok"] and host.takes_instances
        answer = fleet.docker(lab_host, "exec", instance.container_name, *meminfo)
        assert answer.stdout.startswith("MemTotal:")
        assert HostEvent.objects.filter(host=host, action="lxcfs started", user=ops).exists()
    finally:
        fleet.up(lab_host.config, log=lambda _: None)  # LXCFS as the lab keeps it, whatever happened
