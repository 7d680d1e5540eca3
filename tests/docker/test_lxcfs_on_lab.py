"""LXCFS on a lab host: a container's /proc/meminfo shows its own memory limit, follows
`docker update`, and after an LXCFS restart the agent heals the container without restarting it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command

from apps.accounts.models import Team
from apps.applications.models import BaseImage
from apps.hosts import gateway
from apps.hosts.models import Host
from apps.lab import fleet, netns
from apps.network.models import IPPool
from hostagent import lxcfs

DEAD = "Transport endpoint is not connected"


def _mem_total_kb(lab_host: fleet.LabHost, name: str) -> int:
    out = fleet.docker(lab_host, "exec", name, "cat", "/proc/meminfo").stdout
    match = re.search(r"^MemTotal:\s+(\d+) kB$", out, re.MULTILINE)
    assert match, out
    return int(match.group(1))


def _started(lab_host: fleet.LabHost, name: str) -> dict[str, object]:
    state = json.loads(fleet.docker(lab_host, "inspect", name).stdout)[0]
    return {"id": state["Id"], "started": state["State"]["StartedAt"], "restarts": state["RestartCount"]}


def _kill_lxcfs(lab_host: fleet.LabHost) -> int:
    pid = int(lab_host.lxcfs_pidfile.read_text())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while netns.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return pid


def test_lab_status_shows_lxcfs_up_on_each_host(
    lab: list[fleet.LabHost], capsys: pytest.CaptureFixture[str]
) -> None:
    call_command("lab", "status")
    out = capsys.readouterr().out
    for lab_host in lab:
        line = next(line for line in out.splitlines() if line.startswith(lab_host.name))
        assert "lxcfs up" in line


def test_a_container_sees_its_own_memory_and_is_healed_in_place_after_lxcfs_restarts(
    lab: list[fleet.LabHost], lab_hosts: list[Host], cleanup_containers: list[str]
) -> None:
    lab_host, host = lab[0], lab_hosts[0]
    root = str(lab_host.lxcfs_dir)
    facts = gateway.agent(host, "check")["lxcfs"]
    assert facts["root"] == root  # the agent learnt the lab host's root from its sshd
    assert facts["running"] is True
    assert facts["broken"] == []
    binds = lxcfs.binds(root)
    assert facts["binds"] == [list(pair) for pair in binds]
    assert [dest for _, dest in binds[:3]] == ["/proc/meminfo", "/proc/cpuinfo", "/proc/stat"]

    name = "lxcfs-meminfo"
    cleanup_containers.append(name)
    volumes = [arg for src, dest in binds for arg in ("-v", f"{src}:{dest}:ro")]
    options = ["--name", name, "--memory", "48m", *volumes]
    fleet.docker(lab_host, "run", "-d", *options, "slipway/busybox:1", "sleep", "3600")
    assert _mem_total_kb(lab_host, name) == 48 * 1024

    # A limit changed on the running container shows at once: LXCFS reads the cgroup per read.
    fleet.docker(lab_host, "update", "--memory", "96m", "--memory-swap", "96m", name)
    assert _mem_total_kb(lab_host, name) == 96 * 1024
    before = _started(lab_host, name)

    old_pid = _kill_lxcfs(lab_host)
    fleet.up(lab_host.config, log=lambda _: None)
    assert int(lab_host.lxcfs_pidfile.read_text()) != old_pid
    assert fleet._lxcfs_answers(lab_host)

    # The container still holds binds of the dead FUSE connection.
    result = fleet.docker(lab_host, "exec", name, "cat", "/proc/meminfo", check=False)
    assert result.returncode != 0
    assert DEAD in result.stderr
    facts = gateway.agent(host, "check")["lxcfs"]
    assert facts["running"] is True  # the host's own LXCFS is fine again
    (stale,) = [c for c in facts["stale"] if c["name"] == name]
    assert sorted(stale["files"]) == sorted(dest for _, dest in binds)

    healed = gateway.agent(host, "lxcfs-heal")
    (entry,) = [c for c in healed["containers"] if c["name"] == name]
    assert entry["failed"] == {}
    assert sorted(entry["healed"]) == sorted(dest for _, dest in binds)

    assert _mem_total_kb(lab_host, name) == 96 * 1024
    assert _started(lab_host, name) == before  # the same container, never restarted
    uptime = fleet.docker(lab_host, "exec", name, "cat", "/proc/uptime").stdout.split()
    assert float(uptime[0]) < 600  # the container's uptime (LXCFS), not the machine's
    # The new binds are read-only and private, as Docker's were.
    mounts = fleet.docker(lab_host, "exec", name, "cat", "/proc/self/mountinfo").stdout
    (line,) = [line for line in mounts.splitlines() if line.split()[4] == "/proc/meminfo"]
    assert line.split()[5].startswith("ro,")
    assert "shared:" not in line and "master:" not in line
    facts = gateway.agent(host, "check")["lxcfs"]
    assert not [c for c in facts["stale"] if c["name"] == name]

    # Nothing left to heal: a second run changes nothing.
    again = gateway.agent(host, "lxcfs-heal")
    assert not [c for c in again["containers"] if c["name"] == name]

    # A bind the agent made heals like Docker's own after the next restart.
    _kill_lxcfs(lab_host)
    fleet.up(lab_host.config, log=lambda _: None)
    assert DEAD in fleet.docker(lab_host, "exec", name, "cat", "/proc/meminfo", check=False).stderr
    (entry,) = [c for c in gateway.agent(host, "lxcfs-heal")["containers"] if c["name"] == name]
    assert entry["failed"] == {} and len(entry["healed"]) == len(binds)
    assert _mem_total_kb(lab_host, name) == 96 * 1024
    assert _started(lab_host, name) == before


def test_instances_deployed_by_slipway_see_their_limit_and_a_probe_heals_them(
    lab: list[fleet.LabHost],
    lab_hosts: list[Host],
    owner: User,
    alpha: Team,
    busybox: BaseImage,
    lab_pool: IPPool,
    remove_apps: list[str],
) -> None:
    from apps.applications import services as catalog
    from apps.hosts import services as host_services
    from apps.instances import executor
    from apps.instances.models import Instance, Operation

    for host in lab_hosts:
        check = next(c for c in host.checks if c["name"] == "LXCFS")
        assert check["ok"], check
        assert host.facts["lxcfs"]["running"] and host.facts["lxcfs"]["binds"]
    remove_apps.append("freeview")
    app = catalog.app_create(
        user=owner, team=alpha, slug="freeview", base_image=busybox, memory_mb=40, cpus="0.2", instances=1
    )
    executor.run_operation(Operation.objects.get(app=app).pk)
    instance = Instance.objects.select_related("host").get(app=app)
    assert instance.state == Instance.State.RUNNING, instance.last_error
    lab_host = next(h for h in lab if h.name == instance.host.name)
    assert _mem_total_kb(lab_host, instance.container_name) == 40 * 1024
    before = _started(lab_host, instance.container_name)

    _kill_lxcfs(lab_host)
    fleet.up(lab_host.config, log=lambda _: None)
    broken = fleet.docker(lab_host, "exec", instance.container_name, "cat", "/proc/meminfo", check=False)
    assert DEAD in broken.stderr

    # The periodic probe finds the dead files and heals them in place; the host's log says so.
    host = host_services.host_probe(host=instance.host)
    assert next(c for c in host.checks if c["name"] == "LXCFS")["ok"]
    event = host.events.get(action="lxcfs healed")
    assert instance.container_name in event.detail and "/proc/meminfo" in event.detail
    assert _mem_total_kb(lab_host, instance.container_name) == 40 * 1024
    assert _started(lab_host, instance.container_name) == before


def test_the_commands_people_type_show_what_the_user_guide_says(
    lab: list[fleet.LabHost],
    lab_hosts: list[Host],
    owner: User,
    alpha: Team,
    busybox: BaseImage,
    lab_pool: IPPool,
    remove_apps: list[str],
) -> None:
    """docs/user-guide.md, "Metrics": top and /proc/meminfo show the limit; busybox free, nproc
    and df show the host's (and the guide says so)."""
    from apps.applications import services as catalog
    from apps.console import services as console
    from apps.instances import executor
    from apps.instances.models import Instance, Operation

    remove_apps.append("typed")
    app = catalog.app_create(
        user=owner, team=alpha, slug="typed", base_image=busybox, memory_mb=40, cpus="0.2", instances=1
    )
    executor.run_operation(Operation.objects.get(app=app).pk)
    instance = Instance.objects.select_related("host", "app").get(app=app)
    assert instance.state == Instance.State.RUNNING, instance.last_error

    def typed(line: str) -> str:
        out = bytearray()
        session = console.exec_run(
            user=owner, instance=instance, on_output=out.extend, argv=console.argv_from_text(line)
        )
        assert session.exit_code == 0, (line, out)
        return out.decode()

    # top: used + free is the 40 MiB limit (busybox top reads /proc/meminfo).
    used, free = re.search(r"^Mem: (\d+)K used, (\d+)K free", typed("top -bn1"), re.MULTILINE).groups()  # type: ignore[union-attr]
    assert int(used) + int(free) == 40 * 1024
    assert re.search(r"^MemTotal:\s+40960 kB$", typed("cat /proc/meminfo"), re.MULTILINE)
    # busybox free asks sysinfo(): the host's total, far above the limit, as the guide warns.
    total_mb = int(typed("free -m").splitlines()[1].split()[1])
    assert total_mb > 40 * 4
    assert int(typed("nproc").strip()) == os.cpu_count()
    # df: the host disk the volume lives on (its size as the host sees it).
    size = typed("df -k /srv/app").splitlines()[1].split()[1]
    lab_host = next(h for h in lab if h.name == instance.host.name)
    assert abs(int(size) * 1024 - shutil.disk_usage(lab_host.volume_root).total) < 1024**3
    guide = (Path(settings.BASE_DIR) / "docs" / "user-guide.md").read_text()
    assert "`free` in the busybox image | the **host's** memory" in guide
