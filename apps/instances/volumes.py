"""An app's files on the hosts, as the executor needs them before and after containers: a
release's files before an instance of it starts (apps.instances.codefiles), and for apps from
before releases, their volume (the latest upload, or the volume home's files); a moved
instance's directory host to host; what an app leaves on a host, listed for ops.

Called from the executor's pool threads where said; those calls touch no database.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from apps.applications.models import App, Release, RetainedVolume, VolumeUpload
from apps.hosts import gateway, treecopy
from apps.hosts.models import Host
from apps.hosts.transport import HostError
from apps.instances import codefiles
from apps.instances.models import Instance
from apps.instances.spec import release_of

log = logging.getLogger(__name__)

UPLOAD_MARKER = ".slipway-upload"
COPY_MARKER = ".slipway-copied"


def has_volume(app: App, host: Host) -> bool:
    return gateway.run(host, ["test", "-d", app.volume_path(host)], timeout=10).ok


def ask_volumes(app: App, hosts: list[Host]) -> dict[int, Future[bool]]:
    """Start asking each host whether it holds the app's volume, in threads of their own."""
    if not hosts:
        return {}
    pool = ThreadPoolExecutor(max_workers=min(8, len(hosts)), thread_name_prefix="volume-ask")
    asked = {host.pk: pool.submit(has_volume, app, host) for host in hosts}
    pool.shutdown(wait=False)
    return asked


def volumes_left(
    app: App, hosts: list[Host], *, remove: bool, asked: dict[int, Future[bool]] | None = None
) -> None:
    """The app's volume on hosts that run none of its instances any more is removed (a move's
    source, whose files went with the instance), or listed under Retained volumes for ops (after
    a scale-down, or when removing failed), so nothing stays on a host's disk unlisted. The
    volume home keeps its copy: it is where new hosts copy the app's files from. `asked`: the
    answers of `_ask_volumes`, started earlier, for the hosts it covers."""
    asked = asked or {}
    for host in hosts:
        if app.volume_home_id == host.pk or Instance.objects.filter(app=app, host=host).exists():
            continue
        path = app.volume_path(host)
        try:
            if remove:
                result = gateway.run(host, ["rm", "-rf", "--one-file-system", "--", path], timeout=120)
                if result.ok:
                    continue
                log.warning(
                    "volume of %s on %s stays: %s",
                    app.slug,
                    host.name,
                    result.stderr.decode(errors="replace")[-300:],
                )
            elif not (asked[host.pk].result() if host.pk in asked else has_volume(app, host)):
                continue  # the app never had files there
        except HostError as exc:
            log.warning("volume of %s on %s: %s", app.slug, host.name, exc)
        RetainedVolume.objects.get_or_create(
            host=host,
            app_slug=app.slug,
            purged_at=None,
            defaults={"path": path, "team": app.team, "reason": RetainedVolume.Reason.LEFT},
        )


class FilesSync:
    """Before an instance starts on a host, the host gets the files of the instance's release
    (unpacked from its archive, or copied from a host that has them). For an app from before
    releases, its volume gets the latest upload, or else the files of the app's volume home (a
    moved VM's), copied host to host. Called from pool threads: one copy per host and release,
    the other threads wait for it."""

    def __init__(self, app: App, stale: set[int] | None = None) -> None:
        self.upload = VolumeUpload.objects.filter(app=app).order_by("-created_at").first()
        self.app = app
        self.stale = stale or set()
        self.done: set[tuple[int, int]] = set()
        self.locks: dict[tuple[int, int], threading.Lock] = {}
        self.guard = threading.Lock()
        self.tars: dict[int, bytes] = {}
        # Read here, not in the pool threads: the releases' files and where to copy them from.
        self.codes: dict[int, Release] = {}
        self.sources: dict[int, list[Host]] = {}
        for instance in Instance.objects.filter(app=app).select_related("release"):
            release = instance.release or app.release
            if release is not None and not release.in_volume and release.code_number not in self.codes:
                code = codefiles.code_release(release)
                self.codes[release.code_number] = code
                if code.source == Release.Source.HOST:
                    self.sources[code.number] = codefiles.peers(app, code)

    def ready(self, instance: Instance) -> None:
        host = instance.host
        release = release_of(instance)
        if release is not None and not release.in_volume:
            key = (host.pk, release.pk)
            with self.guard:
                lock = self.locks.setdefault(key, threading.Lock())
            with lock:
                if key not in self.done:
                    code = self.codes.get(release.code_number)
                    if code is None:
                        raise codefiles.FilesMissing(
                            f"Release {release.number} changed while it was deployed."
                        )
                    codefiles.release_ready(
                        self.app,
                        host,
                        release,
                        code,
                        sources=self.sources.get(code.number),
                        cache=self.tars,
                    )
                    self.done.add(key)
            return
        home = self.app.volume_home
        if self.upload is None and (home is None or home.pk == host.pk):
            return
        key = (host.pk, 0)
        with self.guard:
            lock = self.locks.setdefault(key, threading.Lock())
        with lock:
            if key in self.done:
                return
            if self.upload is not None:
                volume_put(self.app, host, self.upload, only_if_missing=True)
            elif home is not None:
                volume_copy(self.app, home, host, again=host.pk in self.stale)
            self.done.add(key)


def volume_put(app: App, host: Host, upload: VolumeUpload, *, only_if_missing: bool = False) -> None:
    """Extract the upload into the app's volume on the host, then mark it. The host's agent does
    both and follows no symlink the app made in its volume (`conf -> /etc`, a linked marker)."""
    path = app.volume_path(host)
    if only_if_missing:
        seen = gateway.volume_read(host, path, UPLOAD_MARKER)
        if seen is not None and seen.strip() == upload.sha256:
            return
    gateway.run(host, ["mkdir", "-p", path], timeout=10)
    with upload.file.open("rb") as handle:
        data = handle.read()
    gateway.volume_extract(host, path, data, timeout=120)
    gateway.volume_write(host, path, UPLOAD_MARKER, f"{upload.sha256}\n")


def volume_copy(app: App, source: Host, target: Host, *, again: bool = False) -> None:
    """Copy the app's volume from its home host to another host, once (then marked), or `again`
    over what an earlier copy left there."""
    path = app.volume_path(target)
    if not again and gateway.volume_read(target, path, COPY_MARKER) is not None:
        return
    treecopy.copy_tree(
        vm=source.endpoint,
        source=app.volume_path(source),
        host_run=lambda argv, **kw: gateway.run(target, argv, **kw),
        host_endpoint=target.endpoint,
        target=path,
        excludes=[COPY_MARKER, UPLOAD_MARKER],
        progress=lambda done, total: None,
        source_on_host=True,
    )
    gateway.volume_write(target, path, COPY_MARKER, f"copied from {source.name}\n")


def volume_sync(app: App, source: Host, target: Host) -> None:
    """Make the app's volume on target what it is on source (resumable, checksummed), and mark it
    so the target does not take the volume home's files over it later."""
    path = app.volume_path(target)
    if not has_volume(app, source):
        return  # nothing there to carry over
    treecopy.copy_tree(
        vm=source.endpoint,
        source=app.volume_path(source),
        host_run=lambda argv, **kw: gateway.run(target, argv, **kw),
        host_endpoint=target.endpoint,
        target=path,
        excludes=[COPY_MARKER],
        progress=lambda done, total: None,
        source_on_host=True,
    )
    try:
        gateway.volume_write(target, path, COPY_MARKER, f"moved from {source.name}\n")
    except HostError as exc:
        # As before, the copy stands without its marker (the app may have put a directory there).
        log.warning("volume of %s on %s: no marker: %s", app.slug, target.name, exc)
