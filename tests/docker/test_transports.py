"""A container through each transport on each lab host, and the SSH runner's guarantees."""

from __future__ import annotations

import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.test import override_settings

from apps.hosts import gateway, services
from apps.hosts.models import Host
from apps.hosts.transport import CommandFailed, CommandTimeout, HostKeyChanged, HostKeyUnknown, ssh
from apps.lab import fleet
from apps.network.models import IPPool
from hostagent.protocol import AGENT_VERSION


@pytest.mark.parametrize("transport", ["ssh", "local"])
def test_a_container_starts_through_each_transport_on_each_host(
    lab_hosts: list[Host], lab: list[fleet.LabHost], cleanup_containers: list[str], transport: str
) -> None:
    for host, lab_host in zip(lab_hosts, lab, strict=True):
        if transport == "local":
            host.docker_transport = Host.Transport.LOCAL
            host.docker_socket = str(lab_host.docker_socket)
        name = f"t-{transport}-{host.name}"
        cleanup_containers.append(name)
        client = gateway.docker(host)
        container = client.containers.run(
            "slipway/busybox:1", ["sleep", "300"], name=name, detach=True, labels={"io.slipway.test": "1"}
        )
        container.reload()
        assert container.status == "running"
        # The container really runs on that lab host's daemon: its own CLI sees it.
        listed = fleet.docker(lab_host, "ps", "--filter", f"name=^{name}$", "--format", "{{.ID}}").stdout
        assert listed.strip() == container.id[:12]


def test_a_container_with_a_static_ip_answers_from_the_portal(
    lab_hosts: list[Host], lab_pool: IPPool, cleanup_containers: list[str]
) -> None:
    host = lab_hosts[1]
    name = "t-static-ip"
    cleanup_containers.append(name)
    address = "10.213.250.17"  # outside the ranges the tests' pool hands out
    client = gateway.docker(host)
    container = client.containers.create(
        "slipway/busybox:1", ["httpd", "-f", "-p", "8080", "-h", "/etc"], name=name, network="public"
    )
    client.networks.get("public").disconnect(container)
    client.networks.get("public").connect(container, ipv4_address=address)
    container.start()
    deadline = time.monotonic() + 10
    body = b""
    while time.monotonic() < deadline:
        try:
            body = urllib.request.urlopen(f"http://{address}:8080/passwd", timeout=2).read()
            break
        except OSError:
            time.sleep(0.1)
    assert body.startswith(b"root:x:0:0")


def test_hostagent_info_over_ssh_reports_the_hosts_docker(
    lab_hosts: list[Host], lab: list[fleet.LabHost]
) -> None:
    for host, lab_host in zip(lab_hosts, lab, strict=True):
        document = gateway.agent(host, "info")
        assert document["agent_version"] == AGENT_VERSION
        assert document["docker"]["reachable"] is True
        assert document["docker"]["root_dir"] == str(lab_host.state / "docker")
        assert document["docker"]["storage_driver"] == "overlay2"
        host.refresh_from_db()
        assert host.cpus == document["cpus"]
        assert host.memory_mb == document["memory_bytes"] // 2**20


def test_argv_is_passed_literally_never_through_a_shell(lab_hosts: list[Host]) -> None:
    result = gateway.run(lab_hosts[0], ["echo", "$(id)", "a;b", "'q'"])
    assert result.ok
    assert result.stdout == b"$(id) a;b 'q'\n"


def test_output_is_bounded_and_marked(lab_hosts: list[Host]) -> None:
    result = gateway.run(lab_hosts[0], ["head", "-c", "100000", "/dev/zero"], max_output=1000)
    assert result.truncated
    assert result.stdout.startswith(b"\0" * 1000)
    assert b"output cut by Slipway" in result.stdout


def test_a_command_that_never_ends_is_killed_at_its_deadline(lab_hosts: list[Host]) -> None:
    host = lab_hosts[0]
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match="did not finish within 1 s"):
        gateway.run(host, ["sleep", "600"], timeout=1)
    assert time.monotonic() - started < 10
    # The remote side killed it too: no `sleep 600` is left in the host's namespace.
    leftovers = gateway.run(host, ["pgrep", "-f", "^sleep 600$"])
    assert leftovers.stdout == b""


def test_an_unconfirmed_key_refuses_to_connect(lab_hosts: list[Host]) -> None:
    host = lab_hosts[0]
    host.host_key = ""
    with pytest.raises(HostKeyUnknown, match="not confirmed"):
        gateway.run(host, ["true"])
    with pytest.raises(HostKeyUnknown):
        gateway.docker(host)


def test_a_changed_key_is_refused_and_the_host_marked(lab_hosts: list[Host]) -> None:
    first, second = lab_hosts
    # Pin the other host's key: exactly what a reinstalled or impersonated host looks like.
    Host.objects.filter(pk=first.pk).update(host_key=second.host_key)
    first.refresh_from_db()
    with pytest.raises(HostKeyChanged, match="host key changed"):
        gateway.run(first, ["true"])
    probed = services.host_probe(host=first)
    assert probed.state == Host.State.UNREACHABLE
    assert "host key changed" in probed.last_error
    assert "Re-fetch and confirm" in probed.last_error


def test_a_host_whose_sshd_is_stopped_is_marked_unreachable(
    lab_hosts: list[Host], lab: list[fleet.LabHost]
) -> None:
    host, lab_host = lab_hosts[1], lab[1]
    fleet.stop_sshd(lab_host)
    try:
        gateway.forget(host)  # a cached connection would otherwise still answer
        started = time.monotonic()
        probed = services.host_probe(host=host)
        elapsed = time.monotonic() - started
        assert probed.state == Host.State.UNREACHABLE
        assert "cannot connect" in probed.last_error
        assert elapsed < 10
    finally:
        fleet.up(lab_host.config, log=lambda _: None)
    assert services.host_probe(host=host).state == Host.State.ACTIVE


@override_settings(SSH_BANNER_TIMEOUT=1.0)
def test_an_sshd_that_never_speaks_times_out(db: None, silent_listener: int) -> None:
    host = Host.objects.create(
        name="silent",
        address="127.0.0.1",
        ssh_port=silent_listener,
        host_key="ssh-ed25519 AAAA",
        state=Host.State.ACTIVE,
    )
    started = time.monotonic()
    probed = services.host_probe(host=host)
    assert probed.state == Host.State.UNREACHABLE
    assert "handshake" in probed.last_error
    assert time.monotonic() - started < 10


def test_docker_over_ssh_uses_a_channel_straight_to_the_socket_and_falls_back_to_dial_stdio(
    lab_hosts: list[Host],
) -> None:
    from apps.hosts.transport.docker_api.client import _ssh_client

    host = lab_hosts[0]
    client = gateway.docker(host)
    assert client.ping()
    adapter = client.api._custom_adapter
    assert adapter.holder.streamlocal is True  # the lab's sshd allows streamlocal forwarding

    # A host whose sshd forbids it still works through `docker system dial-stdio` on the host.
    fallback = _ssh_client(host.endpoint, host.socket_path)
    fallback.api._custom_adapter.holder.streamlocal = False
    assert fallback.version()["ApiVersion"]
    assert fallback.api._custom_adapter.holder.streamlocal is False


def test_the_agent_stays_running_on_the_connection_and_answers_in_order(lab_hosts: list[Host]) -> None:
    host = lab_hosts[0]
    first = gateway.agent(host, "info")
    channel = ssh.agent_channel(host.endpoint)
    for _ in range(20):
        assert gateway.agent(host, "ping") == {"agent_version": AGENT_VERSION}
    assert gateway.agent(host, "info")["hostname"] == first["hostname"]
    assert ssh.agent_channel(host.endpoint) is channel  # the same agent process answered all of them
    with pytest.raises(CommandFailed, match=r"no interface holds 10\.213\.250\.250"):
        gateway.agent(host, "garp", address="10.213.250.250")


def test_removals_of_one_container_at_once_all_end_with_it_gone(
    lab_hosts: list[Host], cleanup_containers: list[str]
) -> None:
    """Two removals of the same container (an operation and the reconcile, or a request retried
    after its connection broke) overlap: Docker answers the later ones "removal already in
    progress". Each waits for that removal instead of failing the operation."""
    host = lab_hosts[0]
    client = gateway.docker(host)
    for round_ in range(3):
        name = f"t-remove-twice-{round_}"
        cleanup_containers.append(name)
        client.containers.run("slipway/busybox:1", ["sleep", "300"], name=name, detach=True)
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(gateway.container_remove, [host] * 4, [name] * 4))
        assert any(results), results  # at least one found it there
        assert name not in {c.name for c in client.containers.list(all=True)}
