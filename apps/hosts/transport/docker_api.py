"""The Docker Engine API through docker-py, over SSH or a local unix socket.

Over SSH, each HTTP connection is a channel running `docker system dial-stdio` on the host,
opened on the portal's pinned, authenticated connection (never docker-py's own paramiko
client, which reads ~/.ssh and the system known_hosts). HTTP keep-alive reuses the
channels, so after the first call a request costs a round trip, not a new SSH session.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import docker
import docker.errors
import requests
from django.conf import settings
from docker.client import DockerClient
from docker.transport.sshconn import SSHHTTPAdapter

from apps.hosts.transport import (
    SPEC_LABEL,
    ContainerFailed,
    ContainerSpec,
    ContainerState,
    Endpoint,
    HostError,
    HostUnreachable,
)
from apps.hosts.transport.ssh import session_for

T = TypeVar("T")
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


# --- containers: "ensure" operations with deterministic names --------------------------------


def _retry_stale(fn: Callable[..., T]) -> Callable[..., T]:
    """Run again once if a pooled connection turned out dead (daemon or sshd restarted since
    it was opened). Safe because every call here is an idempotent "ensure"."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except HostUnreachable:
            return fn(*args, **kwargs)

    return wrapper


def _state(container: Any, port: int | None) -> ContainerState:
    attrs = container.attrs
    host_port = None
    if port:
        bindings = (attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{port}/tcp") or []
        if bindings:
            host_port = int(bindings[0]["HostPort"])
    state = attrs.get("State", {})
    if isinstance(state, str):  # the list endpoint gives a bare status, inspect a dict
        state = {"Status": state}
    return ContainerState(
        id=container.id,
        name=container.name.lstrip("/") if container.name else "",
        status=state.get("Status", container.status),
        labels=dict(container.labels or {}),
        host_port=host_port,
        started_at=state.get("StartedAt", ""),
        error=state.get("Error", ""),
        exit_code=state.get("ExitCode"),
    )


def _create(client: DockerClient, spec: ContainerSpec) -> Any:
    labels = dict(spec.labels)
    labels[SPEC_LABEL] = spec.digest
    kwargs: dict[str, Any] = {
        "image": spec.image,
        "command": list(spec.command) or None,
        "name": spec.name,
        "environment": dict(spec.env),
        "labels": labels,
        "mem_limit": f"{spec.memory_mb}m",
        # Same as memory: no swap on top of the limit (and docker refuses memory above an
        # older, lower memory-swap on a later update otherwise).
        "memswap_limit": f"{spec.memory_mb}m",
        "nano_cpus": spec.nano_cpus,
        "volumes": {source: {"bind": target, "mode": "rw"} for source, target in spec.binds},
        "restart_policy": {"Name": "unless-stopped"},
        # A real init as PID 1: signals reach the app (so a stop takes milliseconds, not the
        # 10 s kill timeout) and zombies are reaped, whatever the app does.
        "init": True,
        "detach": True,
    }
    if spec.port:
        kwargs["ports"] = {f"{spec.port}/tcp": (spec.publish_address, None) if spec.publish_address else None}
    try:
        return client.containers.create(**kwargs)
    except APIError as exc:
        if exc.status_code == 409:
            # Someone (an earlier attempt, a parallel worker) made it a moment ago: adopt it.
            return client.containers.get(spec.name)
        raise


@_retry_stale
def container_ensure(client: DockerClient, spec: ContainerSpec, where: str) -> ContainerState:
    """Make the container named spec.name match the spec, adopting one that already does.

    A container made here that does not start, or dies at once, is removed again, so a
    failed attempt leaves nothing behind.
    """
    try:
        try:
            container = client.containers.get(spec.name)
        except NotFound:
            container = None
        if container is not None and container.labels.get(SPEC_LABEL) != spec.digest:
            container.remove(force=True)
            container = None
        created = container is None
        if container is None:
            container = _create(client, spec)
        try:
            if spec.running and container.status != "running":
                container.start()
            elif not spec.running and container.status == "running":
                container.stop(timeout=10)
            container.reload()
            if spec.running and container.status not in ("running", "created"):
                raise ContainerFailed(f"{spec.name} {_death(container)}")
        except (APIError, ContainerFailed):
            if created:
                container.remove(force=True)
            raise
        return _state(container, spec.port)
    except ContainerFailed:
        raise
    except APIError as exc:
        raise ContainerFailed(f"{where}: Docker refused {spec.name}: {exc.explanation or exc}") from exc
    except Exception as exc:
        raise translate(exc, where) from exc


def _death(container: Any) -> str:
    """Why a container is not running: exit code and the last lines it printed."""
    state = container.attrs.get("State", {})
    try:
        tail = container.logs(tail=3).decode(errors="replace").strip()
    except (APIError, requests.exceptions.RequestException):
        tail = ""
    reason = (
        f"exited with code {state.get('ExitCode')}" if container.status != "restarting" else "keeps crashing"
    )
    return f"{reason}{': ' + tail if tail else ''}"


@_retry_stale
def container_why(client: DockerClient, name: str, where: str) -> str:
    try:
        return _death(client.containers.get(name))
    except Exception as exc:
        raise translate(exc, where) from exc


@_retry_stale
def container_remove(client: DockerClient, name: str, where: str) -> bool:
    """Remove the container if it exists; True if there was one."""
    try:
        client.containers.get(name).remove(force=True)
        return True
    except NotFound:
        return False
    except Exception as exc:
        raise translate(exc, where) from exc


def container_restart(client: DockerClient, name: str, where: str, port: int | None) -> ContainerState:
    try:
        container = client.containers.get(name)
        container.restart(timeout=10)
        container.reload()
        return _state(container, port)
    except Exception as exc:
        raise translate(exc, where) from exc


@_retry_stale
def containers_list(client: DockerClient, label: str, where: str) -> list[ContainerState]:
    """All containers (running or not) carrying the label."""
    try:
        return [_state(c, None) for c in client.containers.list(all=True, filters={"label": label})]
    except Exception as exc:
        raise translate(exc, where) from exc


@_retry_stale
def image_present(client: DockerClient, reference: str, where: str) -> bool:
    try:
        client.images.get(reference)
        return True
    except NotFound:
        return False
    except Exception as exc:
        raise translate(exc, where) from exc
