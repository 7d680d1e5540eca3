"""The container an instance should be, computed from the rows (never from user-given paths)."""

from __future__ import annotations

import ipaddress
import posixpath
from typing import Any

from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from apps.applications import secret_env
from apps.applications.models import Release
from apps.hosts.models import Host
from apps.hosts.transport import MANAGED_LABEL, STAMP_PREFIX, ContainerSpec
from apps.instances.models import Instance

APP_LABEL = "io.slipway.app"
SLOT_LABEL = "io.slipway.slot"
INSTANCE_LABEL = "io.slipway.instance"
# The id of the release row the container was made from. Ids only grow, so a container whose
# release the database has not given out yet was made after the database's last write: it was
# restored from a backup (apps.instances.ahead).
RELEASE_STAMP = STAMP_PREFIX + "release"


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


def release_of(instance: Instance) -> Release | None:
    """The release the instance runs: its own, else the app's (a row made before the deploy
    that sets it); None only for apps made without the release services."""
    return instance.release or instance.app.release


def code_binds(instance: Instance, release: Release | None) -> tuple[tuple[str, str], ...]:
    """Read-write binds: the persistent directory and the app's state paths inside its files
    (after the read-only files in Docker's order: a deeper target mounts later)."""
    if release is None or release.in_volume:
        app = instance.app
        return ((app.volume_path(instance.host), app.volume_mount or settings.APP_VOLUME_MOUNT),)
    volume = instance.app.volume_path(instance.host)
    mount = release.volume_mount or settings.APP_VOLUME_MOUNT
    return (
        (f"{volume}/state", settings.APP_STATE_MOUNT),
        *((f"{volume}/state/{path}", f"{mount}/{path}") for path in release.state_paths),
    )


# The spec holds the opened secret values: an error report shows no variable of its frame.
@sensitive_variables()
def instance_spec(instance: Instance) -> ContainerSpec:
    app = instance.app
    host = instance.host
    release = release_of(instance)
    # The instance's own release (or, before releases, its own version): during a deploy most
    # instances still run (or go back to) the one before.
    image = release.base_image if release is not None else (instance.image or app.base_image)
    config: Any = release if release is not None else app
    env = {
        **config.env,
        # Opened here, in the worker, for the container only (its spec is never shown or logged).
        **secret_env.opened(config.secrets),
        "SLIPWAY_APP": app.slug,
        "SLIPWAY_SLOT": str(instance.slot),
        "SLIPWAY_INSTANCE": instance.container_name,
    }
    ro_binds = lxcfs_binds(host)
    if release is not None and not release.in_volume:
        env["SLIPWAY_DATA"] = settings.APP_STATE_MOUNT
        # The release's files, read-only: a release is the same on every host and every time.
        mount = release.volume_mount or settings.APP_VOLUME_MOUNT
        ro_binds = ((app.release_path(host, release.code_number), mount), *ro_binds)
    labels = {
        MANAGED_LABEL: "1",
        APP_LABEL: app.slug,
        SLOT_LABEL: str(instance.slot),
        INSTANCE_LABEL: str(instance.pk),
    }
    if release is not None:
        labels[RELEASE_STAMP] = str(release.pk)
    pool = app.ip_pool
    on_pool = pool is not None and bool(instance.address)
    return ContainerSpec(
        name=instance.container_name,
        image=image.reference,
        command=tuple(config.command or image.default_command),
        env=tuple(sorted(env.items())),
        labels=tuple(sorted(labels.items())),
        memory_mb=instance.memory_mb,
        nano_cpus=int(instance.cpus * 1_000_000_000),
        binds=code_binds(instance, release),
        port=config.port or image.default_port,
        # Apps without an IP pool publish their port on the host's own address.
        publish_address=host.address if _is_ip(host.address) and not on_pool else "",
        network=pool.docker_network if on_pool and pool is not None else "",
        ipv4=instance.address if on_pool and instance.address else "",
        ro_binds=ro_binds,
        workdir=config.workdir,
        running=instance.desired_state == Instance.Desired.RUNNING,
        pids_limit=settings.CONTAINER_PIDS_LIMIT,
        log_max_size=settings.CONTAINER_LOG_MAX_SIZE,
        log_max_file=settings.CONTAINER_LOG_MAX_FILE,
    )
