"""Containers and images on a host through the Docker API."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import requests
from django.conf import settings
from docker.client import DockerClient
from docker.errors import APIError, NotFound
from docker.models.containers import _create_container_args
from docker.types import LogConfig

from apps.hosts.transport import SPEC_LABEL, ContainerFailed, ContainerSpec, ContainerState, HostError
from apps.hosts.transport.docker_api.client import _retry_stale, translate

# --- containers: "ensure" operations with deterministic names --------------------------------


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
    if spec.pids_limit:
        kwargs["pids_limit"] = spec.pids_limit
    if spec.log_max_size:
        kwargs["log_config"] = LogConfig(
            type=LogConfig.types.JSON,
            config={"max-size": spec.log_max_size, "max-file": str(spec.log_max_file or 1)},
        )
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
    before_replace: Callable[[str], None] | None = None,
) -> ContainerState:
    """Make the container named spec.name match the spec, adopting one that already does.

    `fresh` says the caller expects no container yet: create first and look only on a name
    conflict, which saves a round trip on the common path (create, start, inspect). A
    container made here that does not start, or dies at once, is removed again, so a failed
    attempt leaves nothing behind. `before_start` runs between create and start and may refuse
    with ContainerFailed (the address check runs there, alongside the create).
    `before_replace` is given the id of a container made from an older spec before it is
    removed (its last lines are kept by the caller).
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
                if before_replace is not None:
                    before_replace(info["Id"])
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
    """An adopted container whose limits differ from the spec is updated in place (one made
    before the processes limit existed gets it here, without a restart)."""
    host_config = info.get("HostConfig") or {}
    wanted: dict[str, int] = _limits_body(spec.memory_mb, spec.nano_cpus)
    if spec.pids_limit:
        wanted["PidsLimit"] = spec.pids_limit
    if any(host_config.get(key) != value for key, value in wanted.items()):
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
    """Remove the container if it exists; True if there was one. A removal already under way
    (the reconcile's beside an operation's, or a request sent again after its connection broke
    while Docker went on) is waited for, up to DOCKER_TIMEOUT, rather than refused."""
    try:
        client.containers.get(name).remove(force=True)
        return True
    except NotFound:
        return False
    except APIError as exc:
        if exc.status_code == 409 and "already in progress" in str(exc.explanation or ""):
            return _removed_meanwhile(client, name, where)
        raise translate(exc, where) from exc
    except Exception as exc:
        raise translate(exc, where) from exc


def _removed_meanwhile(client: DockerClient, name: str, where: str) -> bool:
    deadline = time.monotonic() + settings.DOCKER_TIMEOUT
    while time.monotonic() < deadline:
        try:
            client.api.inspect_container(name)
        except NotFound:
            return True
        except Exception as exc:
            raise translate(exc, where) from exc
        time.sleep(0.05)
    raise HostError(f"{where}: Docker has been removing {name} for over {settings.DOCKER_TIMEOUT:g} s")


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
