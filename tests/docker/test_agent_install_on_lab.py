"""The portal installs and upgrades hostagent itself, as it would on a real server: a host with
no agent gets one from its first probe; an older one is upgraded by the probe while the host's
instances keep running (the old kept for one rollback); a newer one is refused, untouched."""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from collections.abc import Iterator

import pytest

from apps.hosts import agent, gateway, services
from apps.hosts.models import Host, HostEvent
from apps.lab import fleet


def _agent_of(version: int) -> bytes:
    """A zipapp of this checkout's agent that says it is `version`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(agent.SOURCE.rglob("*.py")):
            text = path.read_text()
            if path.name == "protocol.py":
                text = text.replace(f"AGENT_VERSION = {agent.AGENT_VERSION}", f"AGENT_VERSION = {version}")
            archive.writestr(f"hostagent/{path.relative_to(agent.SOURCE).as_posix()}", text)
        archive.writestr("__main__.py", agent.MAIN)
    return buffer.getvalue()


def _plant(lab_host: fleet.LabHost, name: str, data: bytes) -> None:
    """Install an agent by hand, as an older portal (or ops) would have: `current` is it."""
    (lab_host.agent_dir / name).mkdir(parents=True, exist_ok=True)
    (lab_host.agent_dir / name / "hostagent.pyz").write_bytes(data)
    link = lab_host.agent_dir / "current"
    link.unlink(missing_ok=True)
    link.symlink_to(name)


@pytest.fixture
def first(lab: list[fleet.LabHost], lab_hosts: list[Host]) -> Iterator[tuple[fleet.LabHost, Host]]:
    """lab-h1, its agent put back to the portal's own afterwards."""
    lab_host, host = lab[0], next(h for h in lab_hosts if h.name == lab[0].name)
    yield lab_host, host
    gateway.agent_install(host)
    services.host_probe(host=host)


def _listing(lab_host: fleet.LabHost) -> dict[str, str]:
    return {p.name: os.readlink(p) if p.is_symlink() else "dir" for p in lab_host.agent_dir.iterdir()}


def test_a_host_without_an_agent_gets_one_from_its_first_probe(first: tuple[fleet.LabHost, Host]) -> None:
    lab_host, host = first
    for path in lab_host.agent_dir.iterdir():
        path.unlink() if path.is_symlink() else shutil.rmtree(path)
    gateway.forget(host)

    host = services.host_probe(host=host)

    assert host.state == Host.State.ACTIVE, host.last_error
    assert host.facts["agent_version"] == agent.AGENT_VERSION
    assert host.facts["agent_build"] == agent.bundle().build
    name = agent.bundle().name
    assert _listing(lab_host) == {"current": name, name: "dir"}
    installed = (lab_host.agent_dir / name / "hostagent.pyz").read_bytes()
    assert installed == agent.bundle().data
    event = HostEvent.objects.filter(host=host, action="agent installed").latest("created_at")
    assert "none was installed" in event.detail and name in event.detail


def test_an_older_agent_is_upgraded_by_the_probe_and_kept_for_one_rollback(
    first: tuple[fleet.LabHost, Host], cleanup_containers: list[str]
) -> None:
    lab_host, host = first
    # An instance-like container runs throughout: upgrading the agent touches no container.
    cleanup_containers.append("agent-upgrade-witness")
    fleet.docker(
        lab_host, "run", "-d", "--name", "agent-upgrade-witness", "slipway/busybox:1", "sleep", "600"
    )
    started = fleet.docker(lab_host, "inspect", "-f", "{{.State.StartedAt}}", "agent-upgrade-witness").stdout
    older = f"v{agent.AGENT_VERSION - 1}-0123456789ab"
    _plant(lab_host, older, _agent_of(agent.AGENT_VERSION - 1))
    stale = lab_host.agent_dir / "v1-000000000000"  # older still: pruned
    stale.mkdir(exist_ok=True)
    gateway.forget(host)
    assert gateway.agent(host, "info")["agent_version"] == agent.AGENT_VERSION - 1

    host = services.host_probe(host=host)

    assert host.state == Host.State.ACTIVE, host.last_error
    assert gateway.agent(host, "info")["agent_version"] == agent.AGENT_VERSION
    name = agent.bundle().name
    assert _listing(lab_host) == {"current": name, "previous": older, name: "dir", older: "dir"}
    assert (
        f"version {agent.AGENT_VERSION - 1} was installed"
        in HostEvent.objects.filter(host=host, action="agent installed").latest("created_at").detail
    )
    again = fleet.docker(
        lab_host, "inspect", "-f", "{{.State.Running}} {{.State.StartedAt}}", "agent-upgrade-witness"
    )
    assert again.stdout == "true " + started

    # One rollback: the old one is current again, the new one kept as previous.
    assert gateway.agent_rollback(host) == older
    assert gateway.agent(host, "info")["agent_version"] == agent.AGENT_VERSION - 1
    assert os.readlink(lab_host.agent_dir / "previous") == name


def test_a_newer_agent_is_refused_and_left_alone(first: tuple[fleet.LabHost, Host]) -> None:
    lab_host, host = first
    newer = f"v{agent.AGENT_VERSION + 1}-0123456789ab"
    _plant(lab_host, newer, _agent_of(agent.AGENT_VERSION + 1))
    gateway.forget(host)

    host = services.host_probe(host=host)

    assert host.state == Host.State.UNREACHABLE
    assert f"newer than the {agent.AGENT_VERSION} this portal ships; upgrade the portal" in host.last_error
    assert os.readlink(lab_host.agent_dir / "current") == newer


def test_the_same_version_from_other_sources_is_replaced_by_the_portals_build(
    first: tuple[fleet.LabHost, Host],
) -> None:
    """A portal upgrade that changed the agent but not its version still brings it to every host."""
    lab_host, host = first
    other = f"v{agent.AGENT_VERSION}-000000000000"
    _plant(lab_host, other, _agent_of(agent.AGENT_VERSION))  # no build stamped: a checkout's
    gateway.forget(host)

    host = services.host_probe(host=host)

    assert host.state == Host.State.ACTIVE, host.last_error
    assert os.readlink(lab_host.agent_dir / "current") == agent.bundle().name
    assert (
        "build unknown was installed"
        in HostEvent.objects.filter(host=host, action="agent installed").latest("created_at").detail
    )
