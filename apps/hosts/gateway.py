"""The one small interface through which the rest of the portal reaches a host.

Services call these functions with a Host row; the transport modules underneath do the
SSH and Docker API work. Every failure comes out as a HostError whose message is safe to
show to users.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from django.conf import settings

from apps.hosts import agent as agent_bundle
from apps.hosts.transport import (
    MANAGED_LABEL,
    CommandFailed,
    CommandResult,
    ContainerSpec,
    ContainerState,
    Endpoint,
    HostError,
    HostKeyUnknown,
    docker_api,
    ssh,
)

if TYPE_CHECKING:
    from apps.hosts.models import Host

# The agent the portal installed (apps.hosts.agent); the same path on every host.
AGENT_ARGV = agent_bundle.argv()
AGENT_VERSION = agent_bundle.AGENT_VERSION


class AgentMissing(CommandFailed):
    """No agent is installed where the portal runs it (a new host): install it."""


class AgentTooNew(HostError):
    """The host runs an agent newer than this portal ships: the portal is the one to upgrade."""


def _require_pinned(host: Host) -> None:
    if not host.host_key:
        raise HostKeyUnknown(
            f"{host.name}: the host key is not confirmed; confirm its fingerprint on the host page first"
        )


def run(
    host: Host,
    argv: list[str],
    *,
    timeout: float | None = None,
    stdin: bytes | None = None,
    max_output: int | None = None,
) -> CommandResult:
    """Run argv (never a shell string) on the host over SSH."""
    _require_pinned(host)
    return ssh.run(host.endpoint, argv, timeout=timeout, stdin=stdin, max_output=max_output)


def agent(host: Host, command: str, timeout: float | None = None, **args: object) -> dict[str, Any]:
    """Ask the host's agent (kept running on the SSH connection) and return its JSON document."""
    _require_pinned(host)
    deadline = settings.SSH_COMMAND_TIMEOUT if timeout is None else timeout
    try:
        document = ssh.agent_call(host.endpoint, AGENT_ARGV, command, args, deadline)
    except ssh.AgentGone:
        # An agent without `serve` (older install): one process per request still works.
        return _agent_once(host, command, deadline, args)
    if not isinstance(document, dict):
        raise HostError(f"{host.name}: hostagent {command} answered {type(document).__name__}, not an object")
    return _checked(host, command, document)


def _agent_once(host: Host, command: str, timeout: float, args: dict[str, object]) -> dict[str, Any]:
    argv = [*AGENT_ARGV, command]
    for key, value in args.items():
        if key == "address":
            continue
        if isinstance(value, bool):  # a flag: named when true, left out when false
            argv += [f"--{key}"] if value else []
        else:
            argv.append(f"--{key}={value}")
    if "address" in args:
        argv.append(str(args["address"]))
    result = run(host, argv, timeout=timeout)
    if not result.ok:
        detail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        if result.exit_code == 2 and b"can't open file" in result.stderr:
            raise AgentMissing(
                f"{host.name}: hostagent is not installed at {agent_bundle.root()}/current", exit_code=2
            )
        raise CommandFailed(
            f"{host.name}: hostagent {command} exited {result.exit_code}: {detail[0]}",
            exit_code=result.exit_code,
        )
    try:
        document = json.loads(result.stdout)
    except ValueError:
        raise HostError(f"{host.name}: hostagent {command} printed something that is not JSON") from None
    if not isinstance(document, dict):
        raise HostError(f"{host.name}: hostagent {command} printed {type(document).__name__}, not an object")
    return _checked(host, command, document)


def _checked(host: Host, command: str, document: dict[str, Any]) -> dict[str, Any]:
    version = document.get("agent_version")
    if command == "info" and (not isinstance(version, int) or version > AGENT_VERSION):
        # An older agent is upgraded by the probe; a newer one means the portal is behind.
        raise AgentTooNew(
            f"{host.name}: hostagent speaks version {version}, newer than the {AGENT_VERSION} this "
            "portal ships; upgrade the portal (the agent stays as it is)"
        )
    return document


def agent_install(host: Host) -> agent_bundle.Bundle:
    """Install the portal's agent on the host: copied over SFTP into a directory of its own,
    checksummed, tried, then made `current` in one rename; the one before stays as `previous`
    (one rollback), older ones go. Installing the version already current changes nothing."""
    bundle = agent_bundle.bundle()
    root = agent_bundle.root()
    target = f"{root}/{bundle.name}"
    _must(host, ["mkdir", "-p", target], "create the agent directory")
    part = f"{target}/hostagent.pyz.part"
    _require_pinned(host)
    ssh.put_file(host.endpoint, part, bundle.data)
    summed = _must(host, ["sha256sum", "--", part], "checksum the agent")
    if summed.split()[:1] != [bundle.sha256]:
        raise HostError(
            f"{host.name}: the agent arrived damaged (sha256 {summed[:16]}…, sent {bundle.sha256[:16]}…)"
        )
    _must(host, ["mv", "-f", "--", part, f"{target}/hostagent.pyz"], "put the agent in place")
    said = _must(host, ["python3", f"{target}/hostagent.pyz", "--version"], "start the new agent")
    if said.strip() != f"hostagent {bundle.version}":
        raise HostError(f"{host.name}: the new agent says {said.strip()!r}, not hostagent {bundle.version}")
    before = run(host, ["readlink", "--", f"{root}/current"], timeout=10).stdout.decode().strip()
    if before and before != bundle.name:
        _switch(host, f"{root}/previous", before)
    _switch(host, f"{root}/current", bundle.name)
    ssh.agent_forget(host.endpoint)  # the agent kept open runs the old code
    listed = _must(
        host, ["find", root, "-mindepth", "1", "-maxdepth", "1", "-type", "d", "-name", "v*"], "list agents"
    )
    for path in listed.split():
        if path.rsplit("/", 1)[-1] not in {bundle.name, before}:
            run(host, ["rm", "-rf", "--", path], timeout=30)
    return bundle


def agent_rollback(host: Host) -> str:
    """Make `previous` current again (an upgrade gone wrong); returns the version now current."""
    root = agent_bundle.root()
    previous = run(host, ["readlink", "--", f"{root}/previous"], timeout=10).stdout.decode().strip()
    if not previous:
        raise HostError(f"{host.name}: no previous agent is kept to go back to")
    current = run(host, ["readlink", "--", f"{root}/current"], timeout=10).stdout.decode().strip()
    _switch(host, f"{root}/current", previous)
    if current:
        _switch(host, f"{root}/previous", current)
    ssh.agent_forget(host.endpoint)
    return previous


def _switch(host: Host, link: str, target: str) -> None:
    """Point `link` at `target` in one rename: a reader sees the old agent or the new, never none."""
    _must(host, ["ln", "-sfn", "--", target, f"{link}.new"], f"link {link}")
    _must(host, ["mv", "-Tf", "--", f"{link}.new", link], f"switch {link}")


def _must(host: Host, argv: list[str], what: str) -> str:
    result = run(host, argv, timeout=60)
    if not result.ok:
        detail = result.stderr.decode(errors="replace").strip()[-300:] or f"exit {result.exit_code}"
        raise CommandFailed(f"{host.name}: cannot {what}: {detail}", exit_code=result.exit_code)
    return result.stdout.decode(errors="replace")


def docker(host: Host) -> docker_api.DockerClient:
    """A docker-py client for the host's daemon over its configured transport."""
    if host.docker_transport == "ssh":
        _require_pinned(host)
        return docker_api.client_for(transport="ssh", endpoint=host.endpoint, socket_path=host.socket_path)
    return docker_api.client_for(transport="local", socket_path=host.socket_path)


def container_ensure(
    host: Host,
    spec: ContainerSpec,
    *,
    fresh: bool = False,
    before_start: Callable[[], None] | None = None,
    before_replace: Callable[[str], None] | None = None,
) -> ContainerState:
    """Make the container match the spec; `fresh`: none is expected yet (saves a round trip);
    `before_start`: a last check between create and start, which may refuse; `before_replace`:
    given the id of an outdated container before it is removed."""
    return docker_api.container_ensure(
        docker(host), spec, host.name, fresh=fresh, before_start=before_start, before_replace=before_replace
    )


def container_update(host: Host, name: str, memory_mb: int, nano_cpus: int) -> None:
    """Live resize: memory (with memory+swap) and CPU, no restart."""
    docker_api.container_update(docker(host), name, memory_mb, nano_cpus, host.name)


def limits(host: Host, names: list[str]) -> dict[str, Any]:
    """The limits the kernel enforces on these containers, read from their cgroup files."""
    return dict(agent(host, "limits", containers=names)["containers"])


def exec_run(
    host: Host,
    container: str,
    argv: list[str],
    *,
    user: str = "",
    workdir: str = "",
    timeout: float,
    max_output: int,
    on_output: Callable[[bytes], None],
) -> docker_api.ExecResult:
    """Run argv in the running container (Docker exec, no shell); past the timeout the process
    and its children are killed in the container by the host's agent."""
    return docker_api.exec_run(
        docker(host),
        container,
        argv,
        host.name,
        user=user,
        workdir=workdir,
        timeout=timeout,
        max_output=max_output,
        on_output=on_output,
        kill=_kill_tree(host),
    )


def _kill_tree(host: Host) -> Callable[[int, str], None]:
    """Docker's API cannot stop an exec: the host's agent kills the process and its children,
    after checking they run in that container."""

    def kill(pid: int, container_id: str) -> None:
        agent(host, "kill-tree", timeout=10, pid=pid, container=container_id)

    return kill


def container_remove(host: Host, name: str) -> bool:
    return docker_api.container_remove(docker(host), name, host.name)


def container_restart(host: Host, name: str, port: int | None = None) -> ContainerState:
    return docker_api.container_restart(docker(host), name, host.name, port)


LogQuery = docker_api.LogQuery
LogStream = docker_api.LogStream


def container_logs_follow(host: Host, name: str, query: LogQuery) -> LogStream:
    """The container's logs from `query` on, then each new line as it is written, until the
    stream is closed (from any thread) or the container is removed."""
    return docker_api.open_logs(docker(host), name, host.name, query, follow=True)


def container_logs(host: Host, name: str, query: LogQuery) -> Iterator[tuple[str, bytes]]:
    """("stdout" or "stderr", bytes) frames of the container's logs, oldest first, read as they
    come (the request is made at the first one)."""
    return docker_api.container_logs(docker(host), name, host.name, query)


DockerEvent = docker_api.DockerEvent


def container_events(host: Host, *, since_ns: int, until: float) -> Iterator[DockerEvent]:
    """Starts, deaths, OOM kills, kills and stops of the host's Slipway containers from
    `since_ns` (nanoseconds, inclusive) until `until` (seconds, the host's clock), as they happen."""
    return docker_api.container_events(
        docker(host),
        host.name,
        label=f"{MANAGED_LABEL}=1",
        since_ns=since_ns,
        until=until,
        read_timeout=max(0.0, until - time.time()) + settings.DOCKER_TIMEOUT,
    )


def container_why(host: Host, name: str) -> str:
    return docker_api.container_why(docker(host), name, host.name)


def containers_list(host: Host, label: str) -> list[ContainerState]:
    return docker_api.containers_list(docker(host), label, host.name)


def image_present(host: Host, reference: str) -> bool:
    return docker_api.image_present(docker(host), reference, host.name)


def image_id(host: Host, reference: str) -> str:
    return docker_api.image_id(docker(host), reference, host.name)


def image_load(host: Host, archive: str, on_progress: Callable[[int, int], None] | None = None) -> str:
    return docker_api.image_load(docker(host), archive, host.name, on_progress)


def image_pull(
    host: Host, reference: str, auth: dict[str, str], on_progress: Callable[[int, int], None] | None = None
) -> str:
    """Pull host:port/name:tag from a registry; the image ID the host has under it then. The
    credentials in `auth` go only into this pull's request (never `docker login`, never a file on
    the host, never a log); on_progress(bytes down, bytes in all) as layers come."""
    return docker_api.image_pull(docker(host), reference, auth, host.name, on_progress)


def image_tag(host: Host, image: str, reference: str) -> None:
    """Name the image (an ID or another reference) `reference` too, as `docker tag` does."""
    docker_api.image_tag(docker(host), image, reference, host.name)


def image_untag(host: Host, reference: str) -> None:
    docker_api.image_untag(docker(host), reference, host.name)


# Where Docker looks for the CA of a registry it pulls from (per host:port, read at each pull).
DOCKER_CERTS_DIR = "/etc/docker/certs.d"


def registry_trust(host: Host, hostport: str, ca_pem: str) -> bool:
    """Make the host's Docker trust `ca_pem` for the registry at host:port (its certs.d file,
    written in one rename); False when it had it already."""
    directory = f"{DOCKER_CERTS_DIR}/{hostport}"
    path = f"{directory}/ca.crt"
    have = run(host, ["cat", "--", path], timeout=15)
    if have.ok and have.stdout.decode(errors="replace") == ca_pem:
        return False
    _must(host, ["mkdir", "-p", "--", directory], f"create {directory}")
    # Named after the host: the lab's hosts share one /etc and write it at once.
    part = f"{path}.{host.name}.part"
    _require_pinned(host)
    ssh.put_file(host.endpoint, part, ca_pem.encode(), mode=0o644)
    _must(host, ["mv", "-f", "--", part, path], f"put {path} in place")
    return True


def announce(host: Host, pid: int, address: str) -> None:
    """Gratuitous ARP for an address from inside a container on the host, so the segment learns
    at once where the address lives now (after a move, or when an address changed hands)."""
    agent(host, "garp", timeout=15, address=address, pid=pid)


def announce_for(host: Host, network: str, address: str, mac: str) -> None:
    """Gratuitous ARP, sent from the host onto the network's segment, saying the address is at
    another machine's MAC (a VM that got its address back)."""
    agent(host, "garp-for", timeout=15, network=network, address=address, mac=mac)


def fetch_host_key(address: str, port: int) -> str:
    return ssh.fetch_host_key(address, port)


def portal_public_key() -> str:
    """The portal's SSH public key (made on first use), for hosts' and VMs' authorized_keys."""
    return ssh.portal_public_key()


# --- VMs ------------------------------------------------------------------------------------------
# A VM being moved into a container is reached like a host (SSH, a pinned key, the portal's own
# key), but has no agent and no Row of its own here: callers pass its endpoint.

TtyExec = docker_api.TtyExec


def vm_run(
    endpoint: Endpoint, argv: list[str], *, timeout: float = 20, max_output: int | None = None
) -> CommandResult:
    return ssh.run(endpoint, argv, timeout=timeout, max_output=max_output)


def vm_forget(endpoint: Endpoint) -> None:
    """Drop the cached connection, so the VM's key is checked again on the next command."""
    ssh.drop_session(endpoint)


def vm_install_key(endpoint: Endpoint, password: str) -> None:
    """Add the portal's key to the VM user's authorized_keys, using the password once."""
    ssh.install_portal_key(endpoint, password)


def forget(host: Host) -> None:
    """Drop cached connections to the host (after its key or address changed)."""
    ssh.drop_session(host.endpoint)


def terminal_open(host: Host, container: str, *, user: str = "") -> docker_api.TtyExec:
    """An interactive shell on a TTY in the running container: bash if the image has it, else
    sh. Ending it kills the shell and what it started, by the host's agent."""
    return docker_api.tty_open(docker(host), container, host.name, kill=_kill_tree(host), user=user)


# --- inside an app's volume ------------------------------------------------------------------------
# The app's container (root inside) can make anything in its volume a symlink to host files.
# Host-side work on volume contents therefore goes through the agent, which resolves every path
# one component at a time and follows no symlink (hostagent/safefs.py); never tar, tee or rm.


def volume_extract(
    host: Host,
    root: str,
    data: bytes,
    *,
    timeout: float = 120,
    max_bytes: int | None = None,
    max_members: int | None = None,
) -> dict[str, Any]:
    """Unpack a tarball (plain, gzip, bzip2 or xz) into the volume directory root on the host.
    A symlink or file where the tarball puts a file or directory is replaced, never written
    through; devices, fifos, absolute names and '..' are refused with the member's name."""
    argv = [*AGENT_ARGV, "extract", root]
    if max_bytes is not None:
        argv.append(f"--max-bytes={max_bytes}")
    if max_members is not None:
        argv.append(f"--max-members={max_members}")
    result = run(host, argv, stdin=data, timeout=timeout)
    if not result.ok:
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        detail = lines[-1].removeprefix("hostagent extract: ") if lines else f"exit code {result.exit_code}"
        raise CommandFailed(
            f"{host.name}: unpacking into {root} failed: {detail}", exit_code=result.exit_code
        )
    try:
        document = json.loads(result.stdout)
    except ValueError:
        raise HostError(f"{host.name}: hostagent extract printed something that is not JSON") from None
    return dict(document)


def volume_read(host: Host, root: str, name: str) -> str | None:
    """The content of the regular file root/name on the host; None if there is none (a symlink
    the app put there is not a file and is not followed)."""
    content = agent(host, "read-file", timeout=15, root=root, name=name).get("content")
    return content if isinstance(content, str) else None


def volume_write(host: Host, root: str, name: str, content: str) -> None:
    """Write root/name on the host; a symlink or file at its place is replaced, never written through."""
    agent(host, "write-file", timeout=15, root=root, name=name, content=content)


def network_ensure(host: Host, name: str, *, subnet: str, gateway: str, ip_range: str) -> str:
    """The bridged network `name` on the host, over the interface whose address is in `subnet`
    (the NIC on that segment); made if missing. Says what it did."""

    listed = run(host, ["ip", "-j", "-4", "addr", "show"], timeout=10)
    if not listed.ok:
        raise CommandFailed(
            f"{host.name}: cannot list addresses: {listed.stderr.decode(errors='replace')[-200:]}"
        )
    network = ipaddress.ip_network(subnet, strict=False)
    parents = [
        link["ifname"]
        for link in json.loads(listed.stdout or b"[]")
        for info in link.get("addr_info", [])
        if info.get("local") and ipaddress.ip_address(info["local"]) in network
    ]
    if not parents:
        raise HostError(
            f"{host.name}: no interface has an address in {subnet}, so none is on that segment to bridge onto; "
            "give the host's NIC on that network an address first"
        )
    made = docker_api.network_ensure(
        docker(host),
        name,
        subnet=subnet,
        gateway=gateway,
        parent=parents[0],
        ip_range=ip_range,
        where=host.name,
    )
    return f"{'created' if made else 'kept'} network {name} (macvlan on {parents[0]}, {subnet})"
