from __future__ import annotations

import pytest

from apps.applications.models import BaseImage
from apps.hosts.models import Host


@pytest.fixture
def hosts(db: None) -> list[Host]:
    """Two active hosts as the probe would record them. No test here connects to them; if one
    did by mistake, 127.0.0.1 on a closed port refuses at once."""
    return [
        Host.objects.create(
            name=f"h{i}",
            address="127.0.0.1",
            ssh_port=i,
            host_key="ssh-ed25519 AAAA",
            state=Host.State.ACTIVE,
            checks_ok=True,
            cpus=2,
            memory_mb=1024,
        )
        for i in (1, 2)
    ]


@pytest.fixture
def image(hosts: list[Host]) -> BaseImage:
    image = BaseImage.objects.create(
        name="slipway/busybox", tag="1", runtime="busybox", default_command=["sh"]
    )
    image.hosts.set(hosts)
    return image
