"""`lab up` from nothing, and again over a half-torn-down lab, on a second small lab of its own
(its own prefix, subnet and state), so the shared lab the other tests use is left alone."""

from __future__ import annotations

import ipaddress
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import call_command

from apps.hosts import gateway
from apps.hosts.models import Host
from apps.lab import fleet, netns
from apps.lab.register import register_hosts


@pytest.fixture
def scratch_lab(tmp_path: Path) -> Iterator[fleet.LabConfig]:
    config = fleet.LabConfig(
        prefix="slt",
        subnet=ipaddress.IPv4Network("10.214.0.0/24"),
        hosts=1,
        state_dir=tmp_path / "state",
        run_dir=Path("/run/slipway-lab-test"),
        image_cache=fleet.LabConfig.from_settings().image_cache,
    )
    fleet.down(config, log=lambda _: None, purge=True)  # whatever a killed earlier run left
    yield config
    fleet.down(config, log=lambda _: None, purge=True)


def _healthy(config: fleet.LabConfig) -> bool:
    rows = fleet.status(config)
    return bool(rows) and all(row.healthy for row in rows)


def test_lab_up_builds_a_working_host_from_nothing_and_repairs_a_half_torn_down_one(
    scratch_lab: fleet.LabConfig, db: None
) -> None:
    assert not any(row.netns or row.docker or row.sshd for row in fleet.status(scratch_lab))
    (lab_host,) = fleet.up(scratch_lab, log=lambda _: None)
    assert _healthy(scratch_lab)
    (host,) = register_hosts([lab_host], log=lambda _: None)
    assert host.state == Host.State.ACTIVE
    assert host.address == "10.214.0.11"

    # Tear it half down, as a killed run or a crash would: dockerd killed without its pidfile
    # being cleaned, the host's link to the bridge deleted, the bridge itself gone.
    docker_pid = int(lab_host.docker_pidfile.read_text())
    os.kill(docker_pid, signal.SIGKILL)
    netns.sh("ip", "link", "del", lab_host.veth)
    netns.sh("ip", "link", "del", scratch_lab.bridge)
    deadline = time.monotonic() + 5
    while netns.alive(docker_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _healthy(scratch_lab)

    fleet.up(scratch_lab, log=lambda _: None)
    assert _healthy(scratch_lab)
    assert int(lab_host.docker_pidfile.read_text()) != docker_pid
    gateway.forget(host)
    client = gateway.docker(host)
    output = client.containers.run("slipway/busybox:1", ["echo", "repaired"], remove=True)
    assert output == b"repaired\n"

    # A second `up` over a healthy lab changes nothing.
    pid_before = lab_host.docker_pidfile.read_text()
    fleet.up(scratch_lab, log=lambda _: None)
    assert lab_host.docker_pidfile.read_text() == pid_before

    fleet.down(scratch_lab, log=lambda _: None)
    assert not lab_host.netns_path.exists()
    assert not netns.link_exists(scratch_lab.bridge)
    assert netns.processes_in_netns(lab_host.netns_path) == []


def test_lab_status_prints_each_host(lab: list[fleet.LabHost], capsys: pytest.CaptureFixture[str]) -> None:
    call_command("lab", "status")
    out = capsys.readouterr().out
    for lab_host in lab:
        line = next(line for line in out.splitlines() if line.startswith(lab_host.name))
        assert str(lab_host.address) in line
        assert "dockerd up" in line and "sshd up" in line
        assert "slipway/busybox:1 yes" in line and "slipway/debian-python:1 yes" in line


def _cpu_group(pid: int) -> str:
    return next(
        line.split(":", 2)[2]
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        if "cpu" in line.split(":")[1].split(",")
    )


def test_the_lab_yields_the_cpu_to_the_portal_and_takes_back_a_daemon_that_left_its_group(
    lab: list[fleet.LabHost], cleanup_containers: list[str]
) -> None:
    """The hosts' daemons run at nice 10 in the lab's CPU group (weighed like a quarter of one
    process), their containers in a group of their host's below it; a daemon found outside
    (started by an older lab) is moved back by the next `lab up`."""
    group = Path("/sys/fs/cgroup/cpu") / fleet.LAB_CGROUP
    assert (group / "cpu.shares").read_text().strip() == str(fleet.LAB_CPU_SHARES)
    lab_host = lab[0]
    pids = {
        "dockerd": int(lab_host.docker_pidfile.read_text()),
        "sshd": int(lab_host.sshd_pidfile.read_text()),
        "lxcfs": int(lab_host.lxcfs_pidfile.read_text()),
    }
    for name, pid in pids.items():
        assert _cpu_group(pid) == f"/{fleet.LAB_CGROUP}/daemons", name
        assert os.getpriority(os.PRIO_PROCESS, pid) == fleet.HOST_NICE, name

    cleanup_containers.append("slw-cgroup-probe")
    fleet.docker(lab_host, "run", "-d", "--name", "slw-cgroup-probe", "slipway/busybox:1", "sleep", "60")
    started = fleet.docker(lab_host, "inspect", "-f", "{{.Id}} {{.State.Pid}}", "slw-cgroup-probe")
    container_id, container_pid = started.stdout.split()
    assert _cpu_group(int(container_pid)) == f"/{fleet.LAB_CGROUP}/{lab_host.netns}/{container_id}"
    assert fleet.container_cgroup(lab_host, container_id, "cpu").is_dir()

    # LXCFS as an older lab left it: in the portal's own group, at the portal's priority.
    lxcfs = pids["lxcfs"]
    Path("/sys/fs/cgroup/cpu/cgroup.procs").write_text(f"{lxcfs}\n")
    os.setpriority(os.PRIO_PROCESS, lxcfs, 0)
    assert _cpu_group(lxcfs) == "/"
    fleet.up(fleet.LabConfig.from_settings(), log=lambda _: None)
    assert int(lab_host.lxcfs_pidfile.read_text()) == lxcfs  # kept, not restarted
    assert _cpu_group(lxcfs) == f"/{fleet.LAB_CGROUP}/daemons"
    assert os.getpriority(os.PRIO_PROCESS, lxcfs) == fleet.HOST_NICE
    # The container kept its own group (its CPU limit lives there).
    assert _cpu_group(int(container_pid)) == f"/{fleet.LAB_CGROUP}/{lab_host.netns}/{container_id}"
