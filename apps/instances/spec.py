"""The container an instance should be, computed from the rows (never from user-given paths)."""

from __future__ import annotations

import ipaddress
import posixpath

from django.conf import settings

from apps.hosts.models import Host
from apps.hosts.transport import MANAGED_LABEL, ContainerSpec
from apps.instances.models import Instance

APP_LABEL = "io.slipway.app"
SLOT_LABEL = "io.slipway.slot"
INSTANCE_LABEL = "io.slipway.instance"


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# The files LXCFS may stand in for, so `free` and `top` inside show the instance's own limits.
LXCFS_TARGETS = frozenset(
    {
        "/proc/meminfo",
        "/proc/cpuinfo",
        "/proc/stat",
        "/proc/uptime",
        "/proc/loadavg",
        "/proc/diskstats",
        "/proc/swaps",
        "/sys/devices/system/cpu/online",
    }
)


def lxcfs_binds(host: Host) -> tuple[tuple[str, str], ...]:
    """The LXCFS files the host's last probe found served, as read-only binds. Only known
    targets, and only sources under the LXCFS root: nothing else reaches the container."""
    lxcfs = (host.facts or {}).get("lxcfs") or {}
    root = str(lxcfs.get("root") or "").rstrip("/")
    if not lxcfs.get("running") or not root.startswith("/"):
        return ()
    out = []
    for source, target in lxcfs.get("binds") or []:
        clean = posixpath.normpath(str(source))
        if target in LXCFS_TARGETS and clean == source and clean.startswith(root + "/"):
            out.append((clean, str(target)))
    return tuple(sorted(out))


def instance_spec(instance: Instance) -> ContainerSpec:
    app = instance.app
    host = instance.host
    # The instance's own version, with that version's defaults: during a rolling upgrade the
    # app is pinned to the new one while most instances still run (or go back to) the old.
    image = instance.image or app.base_image
    env = {
        **app.env,
        "SLIPWAY_APP": app.slug,
        "SLIPWAY_SLOT": str(instance.slot),
        "SLIPWAY_INSTANCE": instance.container_name,
    }
    labels = {
        MANAGED_LABEL: "1",
        APP_LABEL: app.slug,
        SLOT_LABEL: str(instance.slot),
        INSTANCE_LABEL: str(instance.pk),
    }
    pool = app.ip_pool
    on_pool = pool is not None and bool(instance.address)
    return ContainerSpec(
        name=instance.container_name,
        image=image.reference,
        command=tuple(app.command or image.default_command),
        env=tuple(sorted(env.items())),
        labels=tuple(sorted(labels.items())),
        memory_mb=instance.memory_mb,
        nano_cpus=int(instance.cpus * 1_000_000_000),
        binds=((app.volume_path(host), app.volume_mount or settings.APP_VOLUME_MOUNT),),
        port=instance.effective_port,
        # Apps without an IP pool publish their port on the host's own address.
        publish_address=host.address if _is_ip(host.address) and not on_pool else "",
        network=pool.docker_network if on_pool and pool is not None else "",
        ipv4=instance.address if on_pool and instance.address else "",
        ro_binds=lxcfs_binds(host),
        workdir=app.workdir,
        running=instance.desired_state == Instance.Desired.RUNNING,
        pids_limit=settings.CONTAINER_PIDS_LIMIT,
        log_max_size=settings.CONTAINER_LOG_MAX_SIZE,
        log_max_file=settings.CONTAINER_LOG_MAX_FILE,
    )
