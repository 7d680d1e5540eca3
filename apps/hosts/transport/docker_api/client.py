"""Connections to a host's Docker daemon: docker-py clients on the portal's pinned SSH session
or a local unix socket, cached per process, and the translation of their errors."""

from __future__ import annotations

import functools
import logging
import os
import shlex
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import docker
import requests
from django.conf import settings
from docker.client import DockerClient
from docker.errors import APIError
from docker.transport.sshconn import RecentlyUsedContainer, SSHConnection, SSHConnectionPool, SSHHTTPAdapter

from apps.hosts.transport import Endpoint, HostError, HostUnreachable
from apps.hosts.transport.ssh import ChannelRefused, open_streamlocal, session_for

T = TypeVar("T")
log = logging.getLogger(__name__)
# Parallel HTTP connections (SSH channels) per host; an operation runs up to this many calls at once.
POOL_SIZE = 16


class _SessionHolder:
    """Quacks like the paramiko.SSHClient that docker-py's pool expects, and opens the channels
    that carry HTTP to the host's Docker socket."""

    def __init__(self, endpoint: Endpoint, socket_path: str) -> None:
        self.endpoint = endpoint
        self.socket_path = socket_path
        self.streamlocal = True

    def get_transport(self) -> Any:
        return session_for(self.endpoint).transport

    def channel(self, timeout: float) -> Any:
        session = session_for(self.endpoint)
        if self.streamlocal:
            try:
                # Straight to the socket: one round trip, no process started on the host.
                return open_streamlocal(session.transport, self.socket_path, settings.SSH_CONNECT_TIMEOUT)
            except ChannelRefused:
                self.streamlocal = False  # sshd forbids it (AllowStreamLocalForwarding no)
        channel = session.open_channel(
            shlex.join(["docker", "-H", f"unix://{self.socket_path}", "system", "dial-stdio"]),
            timeout=timeout,
        )
        return channel

    def close(self) -> None:
        # The session is shared with the SSH runner and cached per process; keep it.
        pass


class _TunnelConnection(SSHConnection):
    def __init__(self, holder: _SessionHolder, timeout: float) -> None:
        super().__init__(ssh_transport=None, timeout=timeout, host="docker")
        self.holder = holder

    def connect(self) -> None:
        channel = self.holder.channel(self.timeout)
        channel.settimeout(self.timeout)
        self.sock = channel


class _TunnelPool(SSHConnectionPool):
    def __init__(self, holder: _SessionHolder, timeout: float, maxsize: int) -> None:
        super().__init__(ssh_client=holder, timeout=timeout, maxsize=maxsize, host="docker")
        self.holder = holder

    def _new_conn(self) -> Any:
        return _TunnelConnection(self.holder, self.timeout)


class PinnedSSHAdapter(SSHHTTPAdapter):
    def __init__(self, endpoint: Endpoint, socket_path: str, timeout: float) -> None:
        # Deliberately skip SSHHTTPAdapter.__init__: it builds its own paramiko client.
        self.holder = _SessionHolder(endpoint, socket_path)
        self.ssh_client = self.holder  # type: ignore[assignment]
        self.ssh_host = str(endpoint)
        self.timeout = timeout
        self.max_pool_size = POOL_SIZE
        self.pools = RecentlyUsedContainer(1, dispose_func=lambda p: p.close())
        requests.adapters.HTTPAdapter.__init__(self)

    def get_connection(self, url: Any, proxies: Any = None) -> Any:
        # One pool for the host, not one per URL as upstream keys it: every distinct URL
        # would otherwise open fresh channels each time.
        with self.pools.lock:
            pool = self.pools.get("ssh")
            # A pool whose transport died (host rebooted) is replaced by one on a fresh session.
            if pool is not None and pool.ssh_transport is not None and pool.ssh_transport.is_active():
                return pool
            pool = _TunnelPool(self.holder, self.timeout, self.max_pool_size)
            self.pools["ssh"] = pool
        return pool


def _ssh_client(endpoint: Endpoint, socket_path: str) -> DockerClient:
    # An explicit API version means docker-py does not probe the daemon on construction.
    client = docker.DockerClient(
        base_url="unix:///nonexistent",
        version=settings.DOCKER_API_VERSION,
        timeout=int(settings.DOCKER_TIMEOUT),
    )
    adapter = PinnedSSHAdapter(endpoint, socket_path, settings.DOCKER_TIMEOUT)
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


_clients: dict[tuple[str, object, str], DockerClient] = {}
_clients_pid = os.getpid()
_clients_lock = threading.Lock()


def client_for(*, transport: str, socket_path: str, endpoint: Endpoint | None = None) -> DockerClient:
    """A cached docker-py client for a host in this process (made again after fork)."""
    global _clients_pid
    key: tuple[str, object, str] = (transport, endpoint, socket_path)
    with _clients_lock:
        if _clients_pid != os.getpid():
            _clients.clear()
            _clients_pid = os.getpid()
        client = _clients.get(key)
        if client is None:
            if transport == "ssh":
                if endpoint is None:
                    raise ValueError("the ssh transport needs an endpoint")
                client = _ssh_client(endpoint, socket_path)
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


def _retry_stale(fn: Callable[..., T]) -> Callable[..., T]:
    """Run again once if a pooled connection turned out dead (daemon or sshd restarted since
    it was opened). Safe because every call here is an idempotent "ensure"."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except HostUnreachable as exc:
            # Said in the worker's log: a request that had reached Docker is sent again here.
            log.warning("%s failed, trying once more: %s", fn.__name__, exc)
            return fn(*args, **kwargs)

    return wrapper
