"""`hostagent info`: the facts the portal uses to learn a host's capacity."""

from __future__ import annotations

import os
import platform
import socket

from hostagent import docker_socket
from hostagent.protocol import AGENT_VERSION, DockerFacts, InfoDocument

CGROUP_ROOT = "/sys/fs/cgroup"


def cgroup_version(root: str = CGROUP_ROOT) -> int:
    # cgroup v2 exposes cgroup.controllers at its root; v1 mounts one hierarchy per controller.
    return 2 if os.path.exists(os.path.join(root, "cgroup.controllers")) else 1


def memory_bytes(meminfo: str = "/proc/meminfo") -> int:
    with open(meminfo) as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"{meminfo}: no MemTotal line")


def cpu_count() -> int:
    # Affinity, not the machine's count: a host confined by cpusets offers only those.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def docker_facts() -> DockerFacts:
    try:
        data = docker_socket.get_json("/info")
    except (OSError, ValueError) as exc:
        return {"reachable": False, "error": str(exc)}
    return {
        "reachable": True,
        "server_version": str(data.get("ServerVersion", "")),
        "root_dir": str(data.get("DockerRootDir", "")),
        "storage_driver": str(data.get("Driver", "")),
        "cgroup_driver": str(data.get("CgroupDriver", "")),
        "cgroup_version": str(data.get("CgroupVersion", "")),
    }


def build() -> str:
    """The build the portal stamped into this agent (apps/hosts/agent.py), "" from a checkout."""
    try:
        from hostagent import _build  # type: ignore[attr-defined]  # written into the zipapp only
    except ImportError:
        return ""
    return str(_build.BUILD)


def collect() -> InfoDocument:
    return {
        "agent_version": AGENT_VERSION,
        "agent_build": build(),
        "hostname": socket.gethostname(),
        "cpus": cpu_count(),
        "memory_bytes": memory_bytes(),
        "kernel": platform.release(),
        "cgroup_version": cgroup_version(),
        "docker": docker_facts(),
    }
