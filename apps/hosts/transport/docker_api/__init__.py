"""The Docker Engine API through docker-py, over SSH or a local unix socket.

Over SSH, each HTTP connection is a channel running `docker system dial-stdio` on the host,
opened on the portal's pinned, authenticated connection (never docker-py's own paramiko
client, which reads ~/.ssh and the system known_hosts). HTTP keep-alive reuses the
channels, so after the first call a request costs a round trip, not a new SSH session.

`client` makes those connections, `containers` ensures containers and images, `images` pulls
and tags images, `exec` runs processes in containers; this module names what the rest of
apps.hosts uses.
"""

from __future__ import annotations

from docker.client import DockerClient

from apps.hosts.transport.docker_api.client import client_for
from apps.hosts.transport.docker_api.containers import (
    container_ensure,
    container_remove,
    container_restart,
    container_update,
    container_why,
    containers_list,
    image_id,
    image_load,
    image_present,
)
from apps.hosts.transport.docker_api.events import DockerEvent, container_events
from apps.hosts.transport.docker_api.exec import ExecResult, TtyExec, exec_run, exec_start, tty_open
from apps.hosts.transport.docker_api.images import image_pull, image_tag, image_untag
from apps.hosts.transport.docker_api.logs import LogQuery, LogStream, container_logs, open_logs
from apps.hosts.transport.docker_api.networks import network_ensure

__all__ = [
    "DockerClient",
    "DockerEvent",
    "ExecResult",
    "LogQuery",
    "LogStream",
    "TtyExec",
    "client_for",
    "container_ensure",
    "container_events",
    "container_logs",
    "container_remove",
    "container_restart",
    "container_update",
    "container_why",
    "containers_list",
    "exec_run",
    "exec_start",
    "image_id",
    "image_load",
    "image_present",
    "image_pull",
    "image_tag",
    "image_untag",
    "network_ensure",
    "open_logs",
    "tty_open",
]
