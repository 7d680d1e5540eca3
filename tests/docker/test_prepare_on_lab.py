"""Prepare on the lab: a registered host that lacks what a fresh server lacks (no agent, IP
forwarding on, a base image version published before it was ready) is made ready by Prepare
alone, step by step, each step on the row and the host's history."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError

from apps.applications.models import BaseImage, BuildState
from apps.fleet import prepare
from apps.fleet.models import Preparation
from apps.hosts import gateway
from apps.hosts.models import Host, HostEvent
from apps.images import publish
from apps.lab import fleet, netns
from apps.network.models import IPPool

REFERENCE = "slipway/busybox:prep"


@pytest.fixture
def published(busybox: BaseImage, lab: list[fleet.LabHost], ops: User) -> Iterator[BaseImage]:
    """A version built and loaded by the portal onto every lab host."""
    image = BaseImage.objects.create(
        name="slipway/busybox", tag="prep", runtime="busybox", recipe=busybox.recipe, state=BuildState.DRAFT
    )
    publish.image_publish(user=ops, image=image)
    publish.run(image.pk)
    image.refresh_from_db()
    assert image.state == BuildState.PUBLISHED, image.build_error
    yield image
    for lab_host in lab:
        fleet.docker(lab_host, "rmi", "-f", REFERENCE, check=False)


def test_prepare_takes_a_bare_host_to_ready(
    lab: list[fleet.LabHost],
    lab_hosts: list[Host],
    lab_pool: IPPool,
    published: BaseImage,
    ops: User,
    owner: User,
) -> None:
    host, lab_host = lab_hosts[1], lab[1]
    # What a server has before the portal did anything: no agent, forwarding on, and none of the
    # versions published before it joined.
    for path in lab_host.agent_dir.iterdir():
        path.unlink() if path.is_symlink() else shutil.rmtree(path)
    gateway.forget(host)
    netns.sh("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", netns=lab_host.netns)
    fleet.docker(lab_host, "rmi", "-f", REFERENCE)
    published.hosts.remove(host)
    try:
        with pytest.raises(PermissionDenied):
            prepare.host_prepare(user=owner, host=host)
        preparation = prepare.host_prepare(user=ops, host=host)
        with pytest.raises(ValidationError, match="being prepared already"):
            prepare.host_prepare(user=ops, host=host)

        prepare.run(preparation.pk)

        preparation.refresh_from_db()
        steps = {s["name"]: (s["state"], s["detail"]) for s in preparation.steps}
        assert preparation.state == Preparation.State.READY, (preparation.error, steps)
        assert steps["install the agent"][0] == "done"
        assert "ip_forward off" in steps["run the doctor"][1]  # found failing, then fixed
        assert steps["create pool networks"][0] == "skipped"
        assert steps["fix network settings"][0] == "done"
        assert steps["fix network settings"][1].startswith("net.ipv4.ip_forward=0")
        sysctl = (lab_host.state / "sysctl.d" / "90-slipway.conf").read_text()
        assert sysctl.endswith("net.ipv4.ip_forward = 0\n")
        assert steps["load base images"] == ("done", f"{REFERENCE}: loaded")
        assert steps["check again"] == ("done", "ready: every required check passes")
        host.refresh_from_db()
        assert host.checks_ok and host.takes_instances
        assert host in published.hosts.all()
        assert (
            fleet.docker(lab_host, "image", "inspect", "-f", "{{.Id}}", REFERENCE).stdout.strip()
            == published.digest
        )
        actions = set(HostEvent.objects.filter(host=host).values_list("action", flat=True))
        assert {"agent installed", "fix-network", "prepared"} <= actions, actions

        # Again: everything is there, so nothing is redone.
        again = prepare.host_prepare(user=ops, host=host)
        prepare.run(again.pk)
        again.refresh_from_db()
        assert again.state == Preparation.State.READY
        again_steps = {s["name"]: s["state"] for s in again.steps}
        assert again_steps["install the agent"] == again_steps["load base images"] == "skipped"
    finally:
        netns.sh("sysctl", "-q", "-w", "net.ipv4.ip_forward=0", netns=lab_host.netns)
