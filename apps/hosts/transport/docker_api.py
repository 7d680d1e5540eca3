"""The Docker Engine API through docker-py, over SSH or a local unix socket.

Over SSH, each HTTP connection is a channel running `docker system dial-stdio` on the host,
opened on the portal's pinned, authenticated connection (never docker-py's own paramiko
client, which reads ~/.ssh and the system known_hosts). HTTP keep-alive reuses the
channels, so after the first call a request costs a round trip, not a new SSH session.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import docker
import docker.errors
import requests
from django.conf import settings
from docker.client import DockerClient
from docker.transport.sshconn import SSHHTTPAdapter

from apps.hosts.transport import Endpoint, HostError, HostUnreachable
from apps.hosts.transport.ssh import session_for

NotFound = docker.errors.NotFound
APIError = docker.errors.APIError
DockerException = docker.errors.DockerException


class _SessionHolder:
    """Quacks like the paramiko.SSHClient that docker-py's adapter expects."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def get_transport(self) -> Any:
        return session_for(self.endpoint).transport

    def close(self) -> None:
        # The session is shared with the SSH runner and cached per process; keep it.
        pass


class PinnedSSHAdapter(SSHHTTPAdapter):
    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        # Deliberately skip SSHHTTPAdapter.__init__: it builds its own paramiko client.
        from docker import constants
        from docker.transport.sshconn import RecentlyUsedContainer

        self.ssh_client = _SessionHolder(endpoint)  # type: ignore[assignment]
        self.ssh_host = str(endpoint)
        self.timeout = timeout
        self.max_pool_size = constants.DEFAULT_MAX_POOL_SIZE
        self.pools = RecentlyUsedContainer(constants.DEFAULT_NUM_POOLS, dispose_func=lambda p: p.close())
        requests.adapters.HTTPAdapter.__init__(self)

    def get_connection(self, url: Any, proxies: Any = None) -> Any:
        from docker.transport.sshconn import SSHConnectionPool

        # One pool for the host, not one per URL as upstream keys it: every distinct URL
        # would otherwise open fresh channels and pay a new `dial-stdio` each time.
        with self.pools.lock:
            pool = self.pools.get("ssh")
            # A pool whose transport died (host rebooted) is replaced by one on a fresh session.
            if pool is not None and pool.ssh_transport is not None and pool.ssh_transport.is_active():
                return pool
            pool = SSHConnectionPool(
                ssh_client=self.ssh_client,
                timeout=self.timeout,
                maxsize=self.max_pool_size,
                host=self.ssh_host,
            )
            self.pools["ssh"] = pool
        return pool


def _ssh_client(endpoint: Endpoint) -> DockerClient:
    # An explicit API version means docker-py does not probe the daemon on construction.
    client = docker.DockerClient(
        base_url="unix:///nonexistent",
        version=settings.DOCKER_API_VERSION,
        timeout=int(settings.DOCKER_TIMEOUT),
    )
    adapter = PinnedSSHAdapter(endpoint, settings.DOCKER_TIMEOUT)
    client.api.mount("http+docker://ssh", adapter)
    client.api._custom_adapter = adapter
    client.api.base_url = "http+docker://ssh"
    return client


def _socket_client(socket_path: str) -> DockerClient:
    return docker.DockerClient(
        base_url=f"unix://{socket_path}",
        version=settings.DOCKER_API_VERSION,
        timeout=int(settings.DOCKER_TIMEOUT),
    )


_clients: dict[tuple[str, object], DockerClient] = {}
_clients_pid = os.getpid()
_clients_lock = threading.Lock()


def client_for(*, transport: str, endpoint: Endpoint | None = None, socket_path: str = "") -> DockerClient:
    """A cached docker-py client for a host in this process (made again after fork)."""
    global _clients_pid
    key: tuple[str, object] = (transport, endpoint if transport == "ssh" else socket_path)
    with _clients_lock:
        if _clients_pid != os.getpid():
            _clients.clear()
            _clients_pid = os.getpid()
        client = _clients.get(key)
        if client is None:
            if transport == "ssh":
                if endpoint is None:
                    raise ValueError("the ssh transport needs an endpoint")
                client = _ssh_client(endpoint)
            elif transport == "local":
                if not socket_path:
                    raise ValueError("the local transport needs a socket path")
                client = _socket_client(socket_path)
            else:
                raise ValueError(f"unknown Docker transport {transport!r}: use 'ssh' or 'local'")
            _clients[key] = client
        return client


def translate(exc: Exception, where: str) -> HostError:
    """Turn docker-py and requests errors into the portal's host errors (safe to show)."""
    if isinstance(exc, HostError):
        return exc
    if isinstance(exc, APIError):
        return HostError(f"{where}: Docker refused: {exc.explanation or exc}")
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, OSError)):
        return HostUnreachable(f"{where}: Docker daemon unreachable: {exc}")
    return HostError(f"{where}: {exc}")
