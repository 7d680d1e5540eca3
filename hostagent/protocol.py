"""Wire types shared with the portal: the version constant and the JSON shapes.

The portal refuses a document whose `agent_version` it does not know, so both sides
change together.
"""

from __future__ import annotations

from typing import TypedDict

AGENT_VERSION = 1
DOCKER_HOST_ENV = "DOCKER_HOST"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


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
    hostname: str
    cpus: int
    memory_bytes: int
    kernel: str
    cgroup_version: int
    docker: DockerFacts
