"""Bounds every instance gets, on the lab's real Docker: a processes limit (a fork bomb in an app
stops there) and rotated log files (an app printing without end cannot fill the host's disk)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apps.applications.models import App
from apps.instances import executor, reconcile
from apps.instances.models import Instance
from apps.lab import fleet


def _inspect(lab: list[fleet.LabHost], instance: Instance) -> tuple[fleet.LabHost, dict[str, Any]]:
    lab_host = next(h for h in lab if h.name == instance.host.name)
    return lab_host, json.loads(fleet.docker(lab_host, "inspect", instance.container_name).stdout)[0]


def test_an_instance_has_a_processes_limit_that_holds_a_fork_bomb(
    deploy: Callable[..., App], lab: list[fleet.LabHost], settings: Any
) -> None:
    settings.CONTAINER_PIDS_LIMIT = 40
    app = deploy("forky", instances=1)
    instance = Instance.objects.select_related("host").get(app=app)
    lab_host, state = _inspect(lab, instance)
    assert state["HostConfig"]["PidsLimit"] == 40
    # 100 sleepers asked for; the kernel refuses the forks past the limit (the shell gives up).
    out = fleet.docker(
        lab_host,
        "exec",
        instance.container_name,
        "sh",
        "-c",
        "for i in $(seq 100); do sleep 60 & done",
        check=False,
        timeout=120,
    )
    assert out.returncode != 0, out
    pids = fleet.container_cgroup(lab_host, state["Id"], "pids")
    assert int((pids / "pids.max").read_text()) == 40
    assert int((pids / "pids.current").read_text()) <= 40
    refused = dict(line.split() for line in (pids / "pids.events").read_text().splitlines())
    assert int(refused["max"]) > 0  # forks the limit refused
    # The app itself still runs; the host was never at stake.
    running = fleet.docker(lab_host, "inspect", "-f", "{{.State.Running}}", instance.container_name).stdout
    assert running.strip() == "true"


def test_an_instance_made_before_the_limit_gets_it_live(
    deploy: Callable[..., App], lab: list[fleet.LabHost], settings: Any
) -> None:
    settings.CONTAINER_PIDS_LIMIT = 0  # as a container made before the setting existed
    app = deploy("pidslive", instances=1)
    instance = Instance.objects.select_related("host").get(app=app)
    _, before = _inspect(lab, instance)
    assert not before["HostConfig"]["PidsLimit"]
    settings.CONTAINER_PIDS_LIMIT = 64
    executor.converge(app)  # as the next operation or repair on the app does
    _, after = _inspect(lab, instance)
    assert after["HostConfig"]["PidsLimit"] == 64
    assert after["Id"] == before["Id"] and after["State"]["StartedAt"] == before["State"]["StartedAt"]
    assert app.slug not in reconcile.reconcile().repaired  # nothing taken for drift


def test_an_app_printing_without_end_stays_within_its_log_bound(
    deploy: Callable[..., App], lab: list[fleet.LabHost], settings: Any
) -> None:
    settings.CONTAINER_LOG_MAX_SIZE = "100k"
    settings.CONTAINER_LOG_MAX_FILE = 2
    app = deploy("chatty", instances=1)
    instance = Instance.objects.select_related("host").get(app=app)
    lab_host, state = _inspect(lab, instance)
    assert state["HostConfig"]["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": "100k", "max-file": "2"},
    }
    # About 1 MB a second into the log, for 3 s, through the container's own stdout.
    fleet.docker(
        lab_host,
        "exec",
        "-d",
        instance.container_name,
        "sh",
        "-c",
        "end=$(($(date +%s)+3)); while [ $(date +%s) -lt $end ]; do "
        "seq 1 2000 | sed 's/$/ all work and no play makes a dull app/' > /proc/1/fd/1; done",
    )
    time.sleep(4)
    log = Path(state["LogPath"])
    files = [p for p in log.parent.iterdir() if p.name.startswith(log.name)]
    total = sum(p.stat().st_size for p in files)
    assert len(files) <= 2, files
    # Rotation holds: at most max-file files of max-size each (plus the line that crossed it).
    assert total <= 2 * 100 * 1024 + 64 * 1024, total
    written = fleet.docker(lab_host, "logs", "--tail", "1", instance.container_name).stdout
    assert "dull app" in written
