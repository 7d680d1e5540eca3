"""Wire types shared with the portal: the version constant and the JSON shapes.

The portal refuses a document whose `agent_version` it does not know, so both sides
change together.
"""

from __future__ import annotations

from typing import TypedDict

# 2: arp-probe, holders; 3: stats, lxcfs; 4: limits; 5: kill-tree; 6: garp-for;
# 7: extract, pack, manifest, write-file, read-file, remove (volume work that follows no symlink)
# 8: installed by the portal as a zipapp (apps/hosts/agent.py), upgraded by the probe
# 9: docker-settings, lxcfs-start (the doctor's fixes that restart a service)
AGENT_VERSION = 9
DOCKER_HOST_ENV = "DOCKER_HOST"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
# `extract` stops past these unless the portal asks for other bounds (a small upload may unpack
# to a great deal: compression bombs).
EXTRACT_MAX_BYTES = 16 << 30
EXTRACT_MAX_MEMBERS = 1_000_000


class DockerFacts(TypedDict, total=False):
    reachable: bool
    error: str
    server_version: str
    root_dir: str
    storage_driver: str
    cgroup_driver: str
    cgroup_version: str


class InfoDocument(TypedDict):
    agent_version: int
    agent_build: str  # which sources, as the portal built them ("" when run from a checkout)
    hostname: str
    cpus: int
    memory_bytes: int
    kernel: str
    cgroup_version: int
    docker: DockerFacts


class ContainerStats(TypedDict, total=False):
    """One container's counters in a `hostagent stats` sweep. Counters are cumulative since the
    container started (the portal turns them into rates); sizes are bytes."""

    id: str  # full container id
    name: str
    labels: dict[str, str]  # only io.slipway.* labels
    pid: int  # init pid; its /proc/PID/cgroup says where the cgroups are
    cpu_usage_ns: int
    cpu_periods: int
    cpu_throttled_periods: int
    cpu_throttled_ns: int
    memory_usage: int
    memory_limit: int  # 0: no limit
    memory_rss: int
    memory_cache: int
    memory_working_set: int  # usage minus inactive file, as the kernel and cAdvisor count it
    memory_swap: int
    memory_failcnt: int
    oom_kills: int
    pids: int
    blkio_read_bytes: int
    blkio_write_bytes: int
    net_rx_bytes: int
    net_tx_bytes: int
    error: str  # set instead of the figures when the container went away mid-sweep


class StatsDocument(TypedDict):
    agent_version: int
    time: float  # host clock (epoch seconds) when the sweep started
    cgroup_version: int
    sweep_ms: float
    containers: list[ContainerStats]
