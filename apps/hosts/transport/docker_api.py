"""The Docker Engine API through docker-py, over SSH or a local unix socket.

Over SSH, each HTTP connection is a channel running `docker system dial-stdio` on the host,
opened on the portal's pinned, authenticated connection (never docker-py's own paramiko
client, which reads ~/.ssh and the system known_hosts). HTTP keep-alive reuses the
channels, so after the first call a request costs a round trip, not a new SSH session.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import queue
import shlex
import socket as socket_module
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import docker
import docker.errors
import requests
from django.conf import settings
from docker.client import DockerClient
from docker.models.containers import _create_container_args
from docker.transport.sshconn import RecentlyUsedContainer, SSHConnection, SSHConnectionPool, SSHHTTPAdapter

from apps.hosts.transport import (
    SPEC_LABEL,
    ContainerFailed,
    ContainerSpec,
    ContainerState,
    Endpoint,
    HostError,
    HostUnreachable,
)
from apps.hosts.transport.ssh import ChannelRefused, open_streamlocal, session_for

log = logging.getLogger(__name__)

T = TypeVar("T")
# Parallel HTTP connections (SSH channels) per host; an operation runs up to this many calls at once.
POOL_SIZE = 16
NotFound = docker.errors.NotFound
APIError = docker.errors.APIError


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
    return _state_of(container.attrs, port, fallback_status=container.status)


def _state_of(info: dict[str, Any], port: int | None, fallback_status: str = "") -> ContainerState:
    ports: list[tuple[int, int]] = []
    if isinstance(info.get("Ports"), list):  # the list endpoint's shape
        for entry in info["Ports"]:
            if entry.get("Type") == "tcp" and entry.get("PublicPort"):
                ports.append((int(entry["PrivatePort"]), int(entry["PublicPort"])))
    else:  # inspect's shape
        for key, bindings in ((info.get("NetworkSettings") or {}).get("Ports") or {}).items():
            inner, _, proto = key.partition("/")
            if proto == "tcp" and bindings:
                ports.append((int(inner), int(bindings[0]["HostPort"])))
    state = info.get("State", {})
    if isinstance(state, str):  # the list endpoint gives a bare status, inspect a dict
        state = {"Status": state}
    labels = info.get("Labels") or (info.get("Config") or {}).get("Labels") or {}
    names = info.get("Names") or [info.get("Name", "")]
    result = ContainerState(
        id=info.get("Id", ""),
        name=(names[0] or "").lstrip("/"),
        status=state.get("Status", fallback_status),
        labels=dict(labels),
        started_at=state.get("StartedAt", ""),
        error=state.get("Error", ""),
        exit_code=state.get("ExitCode"),
        ports=tuple(sorted(set(ports))),
        pid=int(state.get("Pid") or 0),
        restart_count=int(info.get("RestartCount") or 0),
    )
    return dataclasses.replace(result, host_port=result.published(port))


def _create_args(spec: ContainerSpec, version: str) -> dict[str, Any]:
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
        "volumes": {
            **{source: {"bind": target, "mode": "rw"} for source, target in spec.binds},
            **{source: {"bind": target, "mode": "ro"} for source, target in spec.ro_binds},
        },
        "restart_policy": {"Name": "unless-stopped"},
        # A real init as PID 1: signals reach the app (so a stop takes milliseconds, not the
        # 10 s kill timeout) and zombies are reaped, whatever the app does.
        "init": True,
        "detach": True,
        "working_dir": spec.workdir or None,
        "version": version,
    }
    if spec.network:
        kwargs["network_mode"] = spec.network
    elif spec.port:
        kwargs["ports"] = {f"{spec.port}/tcp": (spec.publish_address, None) if spec.publish_address else None}
    # docker-py's own translation of run()-style arguments into the Engine API's create call.
    args = _create_container_args(kwargs)
    if spec.network:
        endpoint: dict[str, Any] = {}
        if spec.ipv4:
            endpoint["IPAMConfig"] = {"IPv4Address": spec.ipv4}
        args["networking_config"] = {"EndpointsConfig": {spec.network: endpoint}}
    return args


def _inspect(api: Any, name: str) -> dict[str, Any] | None:
    try:
        return api.inspect_container(name)  # type: ignore[no-any-return]
    except NotFound:
        return None


def _create(api: Any, spec: ContainerSpec) -> str | None:
    """The new container's id, or None if one by that name exists already."""
    try:
        return str(api.create_container(**_create_args(spec, api._version))["Id"])
    except APIError as exc:
        if exc.status_code == 409:
            return None
        raise


@_retry_stale
def container_ensure(
    client: DockerClient,
    spec: ContainerSpec,
    where: str,
    *,
    fresh: bool = False,
    before_start: Callable[[], None] | None = None,
) -> ContainerState:
    """Make the container named spec.name match the spec, adopting one that already does.

    `fresh` says the caller expects no container yet: create first and look only on a name
    conflict, which saves a round trip on the common path (create, start, inspect). A
    container made here that does not start, or dies at once, is removed again, so a failed
    attempt leaves nothing behind. `before_start` runs between create and start and may refuse
    with ContainerFailed (the address check runs there, alongside the create).
    """
    api = client.api
    try:
        info = None if fresh else _inspect(api, spec.name)
        container_id = None
        created = False
        for _ in range(2):
            if (
                info is not None
                and (info.get("Config") or {}).get("Labels", {}).get(SPEC_LABEL) != spec.digest
            ):
                api.remove_container(info["Id"], force=True)  # made from an older spec
                info = None
            if info is not None:
                container_id = info["Id"]
                _match_limits(api, info, spec)
                break
            container_id = _create(api, spec)
            if container_id is not None:
                created = True
                break
            info = _inspect(api, spec.name)  # someone made it a moment ago: look at it
        if container_id is None:
            raise ContainerFailed(f"{where}: {spec.name} keeps being re-created by someone else")
        status = info["State"]["Status"] if info else "created"
        acted = created
        try:
            if spec.running and status != "running":
                if before_start is not None:
                    before_start()
                api.start(container_id)
                acted = True
            elif not spec.running and status == "running":
                api.stop(container_id, timeout=10)
                acted = True
            info = api.inspect_container(container_id)
            state = _state_of(info, spec.port)
            if spec.running and state.status not in ("running", "created"):
                raise ContainerFailed(f"{spec.name} {_death_of(api, container_id, state)}")
        except (APIError, ContainerFailed):
            if created:
                api.remove_container(container_id, force=True)
            raise
        return dataclasses.replace(state, acted=acted)
    except ContainerFailed:
        raise
    except APIError as exc:
        raise ContainerFailed(f"{where}: Docker refused {spec.name}: {exc.explanation or exc}") from exc
    except Exception as exc:
        raise translate(exc, where) from exc


def _limits_body(memory_mb: int, nano_cpus: int) -> dict[str, int]:
    # Memory and memory+swap together: Docker refuses memory above an older swap limit.
    memory = memory_mb * 1024 * 1024
    return {"Memory": memory, "MemorySwap": memory, "NanoCpus": nano_cpus}


def _match_limits(api: Any, info: dict[str, Any], spec: ContainerSpec) -> None:
    """An adopted container whose limits differ from the spec is updated in place."""
    host_config = info.get("HostConfig") or {}
    wanted = _limits_body(spec.memory_mb, spec.nano_cpus)
    if host_config.get("Memory") != wanted["Memory"] or host_config.get("NanoCpus") != wanted["NanoCpus"]:
        api._post_json(api._url("/containers/{0}/update", info["Id"]), data=wanted).raise_for_status()


@_retry_stale
def container_update(client: DockerClient, name: str, memory_mb: int, nano_cpus: int, where: str) -> None:
    """Change a container's memory and CPU limits live (no restart)."""
    api = client.api
    try:
        response = api._post_json(
            api._url("/containers/{0}/update", name), data=_limits_body(memory_mb, nano_cpus)
        )
        api._raise_for_status(response)
    except APIError as exc:
        raise ContainerFailed(f"{where}: Docker refused to resize {name}: {exc.explanation or exc}") from exc
    except Exception as exc:
        raise translate(exc, where) from exc


def _death_of(api: Any, container_id: str, state: ContainerState) -> str:
    """Why a container is not running: exit code and the last lines it printed."""
    try:
        tail = api.logs(container_id, tail=3).decode(errors="replace").strip()
    except (APIError, requests.exceptions.RequestException):
        tail = ""
    # Between two crashes Docker shows the container running again with exit code 0, so a
    # restart count says more than the momentary status.
    if state.status == "restarting" or state.restart_count:
        code = "" if state.status == "running" else f", last exit code {state.exit_code}"
        reason = f"keeps crashing (restarted {state.restart_count} times{code})"
    else:
        reason = f"exited with code {state.exit_code}"
    return f"{reason}{': ' + tail if tail else ''}"


@_retry_stale
def container_why(client: DockerClient, name: str, where: str) -> str:
    try:
        info = client.api.inspect_container(name)
        return _death_of(client.api, info["Id"], _state_of(info, None))
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


@_retry_stale
def image_id(client: DockerClient, reference: str, where: str) -> str:
    """The image ID the host has under `reference`; "" when it has none."""
    try:
        return str(client.api.inspect_image(reference)["Id"])
    except NotFound:
        return ""
    except Exception as exc:
        raise translate(exc, where) from exc


IMAGE_CHUNK = 1024 * 1024


def image_load(
    client: DockerClient, archive: str, where: str, on_progress: Callable[[int, int], None] | None = None
) -> str:
    """`docker load` of an image archive, streamed in chunks (never read whole into memory);
    on_progress(bytes sent, total) after each. Docker's own answer, e.g. "Loaded image: x:1"."""
    total = os.path.getsize(archive)

    def chunks() -> Iterator[bytes]:
        sent = 0
        with open(archive, "rb") as f:
            while chunk := f.read(IMAGE_CHUNK):
                yield chunk
                sent += len(chunk)
                if on_progress is not None:
                    on_progress(sent, total)

    api = client.api
    try:
        response = api._post(api._url("/images/load"), data=chunks(), params={"quiet": "1"}, stream=True)
        api._raise_for_status(response)
        said = []
        for line in response.iter_lines():
            message = json.loads(line) if line else {}
            if message.get("error"):
                raise ContainerFailed(f"{where}: Docker refused the image: {message['error']}")
            if message.get("stream"):
                said.append(str(message["stream"]).strip())
        return " ".join(said)
    except ContainerFailed:
        raise
    except APIError as exc:
        raise ContainerFailed(f"{where}: Docker refused the image: {exc.explanation or exc}") from exc
    except Exception as exc:
        raise translate(exc, where) from exc


@dataclasses.dataclass
class ExecResult:
    exit_code: int | None
    timed_out: bool
    truncated: bool
    bytes_out: int
    duration: float


def exec_run(
    client: DockerClient,
    container: str,
    argv: list[str],
    where: str,
    *,
    user: str = "",
    workdir: str = "",
    timeout: float,
    max_output: int,
    on_output: Callable[[bytes], None],
    kill: Callable[[int, str], None],
) -> ExecResult:
    """Run argv in the running container through the Docker API's exec (no shell), passing
    its output (stdout and stderr as they come) to `on_output`, at most `max_output` bytes; the
    rest is counted, not kept. Past `timeout` the process is killed in the container (`kill`
    gets its host pid and the container id) and the result says so."""
    started = time.monotonic()
    exec_id = exec_create(client, container, argv, where, stdin=False, tty=False, user=user, workdir=workdir)
    hijacked = _Hijacked(exec_start(client, exec_id, where, tty=False))
    chunks: queue.Queue[bytes | Exception | None] = queue.Queue()

    def pump() -> None:
        try:
            for chunk in hijacked.frames():
                chunks.put(chunk)
        except Exception as exc:  # handed to the caller's thread
            chunks.put(exc)
        finally:
            chunks.put(None)
            hijacked.shut()

    threading.Thread(target=pump, name=f"exec-{container}", daemon=True).start()
    deadline = started + timeout
    timed_out = truncated = False
    kept = total = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            if timed_out:
                break  # killed, and still no end of stream after the grace: give up on it
            timed_out = True
            try:
                info = exec_inspect(client, exec_id, where)
                kill(int(info.get("Pid") or 0), str(info.get("ContainerID") or ""))
            except Exception as exc:  # the result still says it timed out
                log.warning("could not kill exec %s in %s: %s", exec_id[:12], container, exc)
            deadline = time.monotonic() + 5
            continue
        try:
            item = chunks.get(timeout=min(left, 0.5))
        except queue.Empty:
            continue
        if item is None:
            break
        if isinstance(item, Exception):
            raise translate(item, where) from item
        total += len(item)
        if kept < max_output:
            part = item[: max_output - kept]
            kept += len(part)
            on_output(part)
        if total > kept:
            truncated = True
    return ExecResult(
        # Its output has ended, so it has (or is about to): a loaded daemon takes seconds to say.
        exit_code=exit_code_of(client, exec_id, where, wait=10.0),
        timed_out=timed_out,
        truncated=truncated,
        bytes_out=total,
        duration=time.monotonic() - started,
    )


def exit_code_of(client: DockerClient, exec_id: str, where: str, wait: float = 2.0) -> int | None:
    """The exec'd process's exit code once it has ended: Docker may need a moment after the
    end of its output stream to record it (until then it says running, with no code). None if
    it still runs after `wait` seconds."""
    started = time.monotonic()
    deadline = started + wait
    while True:
        try:
            info = exec_inspect(client, exec_id, where)
        except HostError as exc:
            # The output has all arrived; a hiccup asking for the code must not lose the result.
            if time.monotonic() >= deadline:
                log.warning("exec %s: cannot read its exit code: %s", exec_id[:12], exc)
                return None
            time.sleep(0.2)
            continue
        code = info.get("ExitCode")
        if not info.get("Running") and code is not None:
            if time.monotonic() - started > 1:
                log.info(
                    "exec %s: its exit code came %.1f s after its output ended",
                    exec_id[:12],
                    time.monotonic() - started,
                )
            return int(code)
        if time.monotonic() >= deadline:
            log.warning(
                "exec %s: no exit code %.0f s after its output ended (running: %s)",
                exec_id[:12],
                wait,
                info.get("Running"),
            )
            return None
        time.sleep(0.05)


# --- interactive exec on a TTY (the browser terminal) -----------------------------------------

TERMINAL_ENV = {"TERM": "xterm-256color"}


@_retry_stale
def path_exists(client: DockerClient, container: str, path: str, where: str) -> bool:
    """Whether `path` exists in the container: a HEAD of its archive endpoint, which stats the
    path (symlinked parents followed) without copying anything."""
    api = client.api
    try:
        response = api.head(api._url("/containers/{0}/archive", container), params={"path": path})
    except Exception as exc:
        raise translate(exc, where) from exc
    if response.status_code == 404:
        return False
    try:
        api._raise_for_status(response)
    except Exception as exc:
        raise translate(exc, where) from exc
    return True


def exec_create(
    client: DockerClient,
    container: str,
    cmd: list[str],
    where: str,
    *,
    stdin: bool = True,
    tty: bool = True,
    user: str = "",
    workdir: str = "",
    environment: dict[str, str] | None = None,
) -> str:
    try:
        created = client.api.exec_create(
            container,
            cmd,
            stdout=True,
            stderr=True,
            stdin=stdin,
            tty=tty,
            user=user,
            workdir=workdir or None,
            environment=environment,
        )
    except APIError as exc:
        raise ContainerFailed(
            f"{where}: Docker refused to start {cmd[0]} in {container}: {exc.explanation or exc}"
        ) from exc
    except Exception as exc:
        raise translate(exc, where) from exc
    return str(created["Id"])


def exec_start(
    client: DockerClient, exec_id: str, where: str, *, tty: bool = True, socket: bool = True
) -> Any:
    """Start the exec and take over its HTTP connection (Docker answers 101 and the connection
    becomes the process's stdin/stdout). docker-py hands back the bare transport underneath:
    over SSH the paramiko Channel of the pooled connection (a direct-streamlocal channel to the
    host's Docker socket), locally the SocketIO of the unix socket. Either carries the
    requests response as `_response`, whose header reader may already hold the first bytes
    of the stream; TtyExec takes them from there."""
    try:
        return client.api.exec_start(exec_id, tty=tty, socket=socket)
    except APIError as exc:
        raise ContainerFailed(
            f"{where}: Docker refused to start exec {exec_id[:12]}: {exc.explanation or exc}"
        ) from exc
    except Exception as exc:
        raise translate(exc, where) from exc


def exec_resize(client: DockerClient, exec_id: str, where: str, *, height: int, width: int) -> None:
    try:
        client.api.exec_resize(exec_id, height=height, width=width)
    except Exception as exc:
        raise translate(exc, where) from exc


@_retry_stale  # read-only: a pooled connection that died meanwhile is simply tried again
def exec_inspect(client: DockerClient, exec_id: str, where: str) -> dict[str, Any]:
    try:
        return dict(client.api.exec_inspect(exec_id))
    except Exception as exc:
        raise translate(exc, where) from exc


class _Hijacked:
    """The two directions of an exec's hijacked connection (what `exec_start` hands back).
    http.client read Docker's answer through a buffered reader, which may already hold the
    first bytes of the stream (a short command's whole output, or a shell's first prompt):
    `read` hands those out first. Reading the bare transport alone, as docker-py's own stream
    does (docker/docker-py#3332), loses them."""

    def __init__(self, raw: Any) -> None:
        self.response = getattr(raw, "_response", None)
        header_reader = self.response.raw._fp.fp if self.response is not None else None
        if hasattr(raw, "get_transport"):  # a paramiko Channel (the ssh transport)
            # Read through a buffered ChannelFile: what it read past the headers is in its buffer.
            self._pending = bytes(getattr(header_reader, "_rbuffer", b""))
            if header_reader is not None:
                header_reader._rbuffer = b""
            raw.settimeout(None)
            self._recv: Callable[[int], bytes] = raw.recv
            self.send: Callable[[bytes], None] = raw.sendall
            self.shut: Callable[[], None] = raw.close
        else:  # the SocketIO of a unix socket (the local transport)
            sock = raw._sock
            sock.settimeout(None)
            self._pending = b""
            # The BufferedReader that read the headers hands out its read-ahead first.
            self._recv = header_reader.read1 if header_reader is not None else sock.recv
            self.send = sock.sendall

            def shut() -> None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket_module.SHUT_RDWR)

            self.shut = shut

    def read(self, size: int = 65536) -> bytes:
        """Up to `size` bytes as they come; b"" at the end of the stream."""
        if self._pending:
            chunk, self._pending = self._pending[:size], self._pending[size:]
            return chunk
        try:
            return bytes(self._recv(size) or b"")
        except (OSError, EOFError, ValueError):
            return b""  # closed under us: the end of the stream

    def frames(self) -> Iterator[bytes]:
        """The payloads of a stream without a TTY, where Docker multiplexes stdout and stderr
        in frames: one byte of stream, three of padding, four of big-endian length."""
        buffer = b""
        while chunk := self.read():
            buffer += chunk
            while len(buffer) >= 8:
                size = int.from_bytes(buffer[4:8], "big")
                if len(buffer) < 8 + size:
                    break
                payload, buffer = buffer[8 : 8 + size], buffer[8 + size :]
                if payload:
                    yield payload


class TtyExec:
    """A process on a TTY in a container: read its output, type into it, resize it, end it.

    `read` blocks until output comes and returns b"" once the process has exited (or the
    stream was closed); it is meant for one reader thread, while another thread writes,
    resizes or closes. Closing kills the process and its children (`kill` gets the host pid
    and the container id): Docker's API cannot stop an exec, and a process whose stream is
    closed keeps running."""

    def __init__(
        self,
        client: DockerClient,
        exec_id: str,
        raw: Any,
        where: str,
        kill: Callable[[int, str], None],
    ) -> None:
        self.client = client
        self.exec_id = exec_id
        self.where = where
        self._kill = kill
        self._closed = False
        self._lock = threading.Lock()
        self._io = _Hijacked(raw)
        self._response = self._io.response
        self._send = self._io.send
        self._shut = self._io.shut

    def read(self, size: int = 65536) -> bytes:
        return self._io.read(size)

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            self._send(data)
        except (OSError, EOFError) as exc:
            raise translate(exc, self.where) from exc

    def resize(self, cols: int, rows: int) -> None:
        """Resize the TTY. Right after the start the process may not be running yet, and Docker
        refuses: tried again for up to a second, like the docker CLI does."""
        for attempt in range(10):
            try:
                exec_resize(self.client, self.exec_id, self.where, height=rows, width=cols)
                return
            except HostError:
                if attempt == 9 or self._closed:
                    raise
                time.sleep(0.1)

    def inspect(self) -> dict[str, Any]:
        return exec_inspect(self.client, self.exec_id, self.where)

    def exit_code(self, wait: float = 2.0) -> int | None:
        return exit_code_of(self.client, self.exec_id, self.where, wait)

    def close(self) -> None:
        """End the process (and what it started) if it still runs, then close the stream."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            info = self.inspect()
            if info.get("Running") and info.get("Pid"):
                self._kill(int(info["Pid"]), str(info.get("ContainerID") or ""))
        except Exception as exc:  # the stream is closed all the same
            log.warning("could not end exec %s (%s): %s", self.exec_id[:12], self.where, exc)
        finally:
            with contextlib.suppress(Exception):
                self._shut()
            if self._response is not None:
                with contextlib.suppress(Exception):
                    self._response.close()


def tty_open(
    client: DockerClient,
    container: str,
    where: str,
    *,
    kill: Callable[[int, str], None],
    user: str = "",
    shells: tuple[str, ...] = ("/bin/bash", "/bin/sh"),
) -> TtyExec:
    """Start the first of `shells` the container has (the last one if none is found) on a TTY,
    with TERM=xterm-256color."""
    shell = next((s for s in shells[:-1] if path_exists(client, container, s, where)), shells[-1])
    exec_id = exec_create(client, container, [shell], where, user=user, environment=TERMINAL_ENV)
    raw = exec_start(client, exec_id, where)
    return TtyExec(client, exec_id, raw, where, kill)
