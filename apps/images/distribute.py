"""A published version onto the hosts, several at once: streamed over SSH (`docker load`,
SSH_LOAD_PARALLEL hosts at a time) or, with a registry, pushed once and then pulled by the hosts
(REGISTRY_PULL_PARALLEL at a time). Either way the image every host ends with must be the
version's: its ID is the config digest the portal built.

Through a registry, each host's Docker is first made to trust the registry's CA (its certs.d
file), then pulls host:port/name:tag with the credentials in that one request; only once the ID
is checked is it named name:tag, the reference instances use, and the host counted among the
version's hosts. A host that got another image is marked failed in the version's load progress
with both digests and is not offered the version (placement goes by the version's hosts).

The threads only talk to hosts and fill in the progress rows; this thread writes the database
(progress every PROGRESS_EVERY seconds, and the version's hosts at the end) and asks whether to
go on (a cancelled publish starts no further host), so a publish run in a transaction of its
own (the tests') sees every change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from django.conf import settings

from apps.applications import secret_env
from apps.applications.models import BaseImage
from apps.hosts import gateway
from apps.hosts.models import Host
from apps.hosts.transport import HostError
from apps.images import imagebuild, registry, registry_settings
from apps.images.models import Registry

log = logging.getLogger(__name__)

PROGRESS_EVERY = 0.5


class DigestMismatch(HostError):
    """The host pulled the tag but got another image than the published one."""


def active() -> Registry | None:
    return registry_settings.registry_active()


def remote_reference(row: Registry, image: BaseImage) -> str:
    return f"{row.hostport}/{image.name}:{image.tag}"


class _Progress:
    """The version's per-host progress rows, shared by the pulling threads under one lock."""

    def __init__(self, image: BaseImage, rows: dict[str, dict[str, Any]]) -> None:
        self.image = image
        self.rows = rows
        self.lock = threading.Lock()
        self.dirty = True

    def update(self, host: Host, **fields: Any) -> None:
        with self.lock:
            self.rows[host.name].update(fields)
            self.dirty = True

    def save(self) -> None:
        with self.lock:
            if not self.dirty:
                return
            snapshot = {name: dict(row) for name, row in self.rows.items()}
            self.dirty = False
        BaseImage.objects.filter(pk=self.image.pk).update(load_progress=snapshot)


def _onto(
    host: Host,
    image: BaseImage,
    built: imagebuild.Built,
    row: Registry,
    access: registry.Access,
    progress: _Progress,
) -> None:
    """One host: trust the CA, pull, check the digest, name it. HostError says what failed."""
    if gateway.image_id(host, image.reference) == built.digest:
        progress.update(host, state="loaded", done=built.size, error="", note="had it already")
        return
    if row.ca_pem:
        gateway.registry_trust(host, row.hostport, row.ca_pem)
    remote = remote_reference(row, image)
    progress.update(host, state="loading", done=0, note=f"pulling from {row.hostport}")
    auth = {"username": access.username, "password": access.password} if access.username else {}

    def pulled(done: int, total: int) -> None:
        progress.update(host, done=done, total=total)

    found = gateway.image_pull(host, remote, auth, pulled)
    if found != built.digest:
        # Not left under the registry's name either: nothing on the host says it is this version.
        try:
            gateway.image_untag(host, remote)
        except HostError as exc:
            log.warning("%s: could not drop %s after a digest mismatch: %s", host.name, remote, exc)
        raise DigestMismatch(
            f"pulled {remote} but got {found or 'nothing'}, not the published {built.digest}"
        )
    # Named by the ID just checked, not by the registry's tag, which may have moved meanwhile.
    gateway.image_tag(host, built.digest, image.reference)
    named = gateway.image_id(host, image.reference)
    if named != built.digest:
        raise DigestMismatch(
            f"after tagging, {image.reference} there is {named or 'missing'}, not {built.digest}"
        )
    progress.update(host, state="loaded", error="", note=f"pulled from {row.hostport}")


def through_registry(
    image: BaseImage,
    built: imagebuild.Built,
    hosts: list[Host],
    rows: dict[str, dict[str, Any]],
    keep_going: Callable[[], bool] = lambda: True,
) -> list[str]:
    """Push the built version, then pull it on `hosts` at once; "host: why" for each that failed.
    `rows` are the version's load progress (a row per host, already there)."""
    row = active()
    if row is None:
        return [f"{host.name}: no registry is enabled any more" for host in hosts]
    progress = _Progress(image, rows)
    for host in hosts:
        progress.update(host, note=f"waiting for the push to {row.hostport}")
    progress.save()
    try:
        opened = registry_settings.access(row)
        pushed = registry.push(
            opened,
            built.path,
            image.name,
            image.tag,
            timeout=settings.REGISTRY_TIMEOUT,
            work_dir=built.path.parent,
        )
        if pushed.config_digest != built.digest:
            raise registry.RegistryError(
                f"the archive's config is {pushed.config_digest}, not {built.digest}"
            )
    except (registry.RegistryError, secret_env.SecretUnreadable, OSError) as exc:
        message = f"the push to {row.hostport} failed: {exc}"
        for host in hosts:
            progress.update(host, state="failed", error=message)
        progress.save()
        return [f"{host.name}: {message}" for host in hosts]
    log.info(
        "pushed %s (%s bytes sent%s)",
        pushed.reference,
        pushed.sent,
        ", it was there already" if pushed.skipped else "",
    )
    return _each_host(
        image,
        hosts,
        progress,
        lambda host: _onto(host, image, built, row, opened, progress),
        settings.REGISTRY_PULL_PARALLEL,
        keep_going,
    )


def through_ssh(
    image: BaseImage,
    built: imagebuild.Built,
    hosts: list[Host],
    rows: dict[str, dict[str, Any]],
    keep_going: Callable[[], bool] = lambda: True,
) -> list[str]:
    """Stream the built archive to `hosts` over SSH (`docker load`), SSH_LOAD_PARALLEL at a time;
    "host: why" for each that failed. Each host's line of the version's load progress counts
    the bytes sent."""
    progress = _Progress(image, rows)
    return _each_host(
        image,
        hosts,
        progress,
        lambda host: _load(host, image, built, progress),
        settings.SSH_LOAD_PARALLEL,
        keep_going,
    )


def _load(host: Host, image: BaseImage, built: imagebuild.Built, progress: _Progress) -> None:
    """One host: `docker load` the archive unless it has the version, then check the ID."""
    if gateway.image_id(host, image.reference) == built.digest:
        progress.update(host, state="loaded", done=built.size, error="", note="had it already")
        return
    progress.update(host, state="loading", done=0)

    def sent(done: int, total: int) -> None:
        progress.update(host, done=done)

    gateway.image_load(host, str(built.path), sent)
    found = gateway.image_id(host, image.reference)
    if found != built.digest:
        raise HostError(
            f"after loading, {image.reference} there is {found or 'missing'}, not {built.digest} "
            "(does the host use Docker's containerd image store?)"
        )
    progress.update(host, state="loaded", done=built.size, error="")


def _each_host(
    image: BaseImage,
    hosts: list[Host],
    progress: _Progress,
    work: Callable[[Host], None],
    parallel: int,
    keep_going: Callable[[], bool],
) -> list[str]:
    """`work` for every host, `parallel` at a time; the hosts it succeeded on become the
    version's, a host whose digest did not match stops being one. Once `keep_going()` says no
    (asked here every PROGRESS_EVERY), hosts not started are left as they were (waiting) and
    those under way finish. "host: why" for each that failed."""
    failed: dict[int, str] = {}
    mismatched: set[int] = set()
    succeeded: set[int] = set()
    stopped = False
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts))), thread_name_prefix="load") as pool:
        futures: dict[Future[None], Host] = {pool.submit(work, host): host for host in hosts}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=PROGRESS_EVERY, return_when=FIRST_COMPLETED)
            for future in done:
                host = futures[future]
                if future.cancelled():
                    continue
                error = future.exception()
                if error is None:
                    succeeded.add(host.pk)
                    continue
                text = str(error) if isinstance(error, HostError) else f"unexpected error: {error!r}"
                failed[host.pk] = text
                if isinstance(error, DigestMismatch):
                    mismatched.add(host.pk)
                progress.update(host, state="failed", error=text)
                if not isinstance(error, HostError):
                    log.error("loading %s onto %s", image.reference, host.name, exc_info=error)
            progress.save()
            if pending and not stopped and not keep_going():
                stopped = True
                for future in pending:
                    future.cancel()  # only those not started yet: a load under way finishes
    for host in hosts:
        if host.pk in mismatched:
            image.hosts.remove(host)  # whatever it had before: it does not hold this version now
        elif host.pk in succeeded:
            image.hosts.add(host)
    progress.save()
    return [f"{host.name}: {failed[host.pk]}" for host in hosts if host.pk in failed]
