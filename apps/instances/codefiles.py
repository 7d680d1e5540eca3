"""A release's files on a host: put there before an instance of it starts, removed by retention.

Layout under the app's volume directory on each host (computed by the portal, never given by a
user):

    releases/<n>/       the files of release n, unpacked once, bound read-only into instances
    releases/.<n>.done  written after they are complete: its presence means "ready"
    state/              the app's persistent directory, bound read-write (APP_STATE_MOUNT)

Everything is written through the host agent (unpack, write a file), which replaces a symlink
where it puts something rather than following it: an app from before releases has its whole
volume bound read-write and may have planted links there.
"""

from __future__ import annotations

import io
import logging
import tarfile
from collections.abc import Iterable

from apps.applications.models import App, Release
from apps.hosts import gateway, treecopy
from apps.hosts.models import Host
from apps.hosts.transport import CommandFailed, HostError

log = logging.getLogger(__name__)


class FilesMissing(Exception):
    """The release's files cannot be had on this host (pruned, or no host has them); the
    message is safe to show."""


def marker(number: int) -> str:
    return f"releases/.{number}.done"


def code_release(release: Release) -> Release:
    """The release whose files this one uses (itself, or an earlier one it was made from)."""
    if release.code_number == release.number:
        return release
    return Release.objects.select_related("home").get(app_id=release.app_id, number=release.code_number)


def peers(app: App, code: Release) -> list[Host]:
    """Hosts that may hold the files of a release moved from a VM: where they were put first,
    then any host running a release that uses them."""
    found = [code.home] if code.home is not None else []
    holding = Host.objects.filter(instances__app=app, instances__release__code_number=code.number).distinct()
    return found + [h for h in holding if h not in found]


def _dirs(names: Iterable[str]) -> list[tarfile.TarInfo]:
    out = []
    for name in names:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        out.append(info)
    return out


def layout_tar(release: Release, code: Release | None = None) -> bytes:
    """A tar of the release's directories (and, with `code`, its files from the archive moved
    under releases/<n>/): unpacked into the volume directory, it makes the layout."""
    number = release.code_number
    prefix = f"releases/{number}"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as out:
        for info in _dirs(["releases", prefix, "state"]):
            out.addfile(info)
        if code is not None and code.archive:
            with code.archive.open("rb") as handle, tarfile.open(fileobj=handle, mode="r:*") as archive:
                for member in archive:
                    name = _plain(member.name)
                    if not name:
                        continue  # the archive's own top directory: releases/<n> stands for it
                    member.name = f"{prefix}/{name}"
                    if member.islnk():  # a hard link names another member
                        member.linkname = f"{prefix}/{_plain(member.linkname)}"
                    data = archive.extractfile(member) if member.isreg() else None
                    out.addfile(member, data)
        # The mount points of the state paths inside the files, and their persistent directories.
        for path in release.state_paths:
            for info in _dirs(_parents(f"state/{path}") + _parents(f"{prefix}/{path}")):
                out.addfile(info)
    return buffer.getvalue()


def _plain(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _parents(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def release_ready(
    app: App,
    host: Host,
    release: Release,
    code: Release,
    *,
    sources: list[Host] | None = None,
    cache: dict[int, bytes] | None = None,
) -> str:
    """Make the release's files and directories be on the host; says what it did ("" when it
    found them there). `code`: the release whose files it uses (code_release), `sources`: for
    files moved from a VM, the hosts to copy them from (peers); read beforehand, since this runs
    in the executor's pool threads, which do not touch the database. `cache` keeps the tar to
    unpack per release, for the other hosts of one run."""
    volume = app.volume_path(host)
    try:
        # The common case costs one round trip to the agent: the files are there.
        done = gateway.volume_read(host, volume, marker(code.number))
    except CommandFailed:
        done = None  # no directory for the app on this host yet (or not one the agent accepts)
    if done is not None and done.strip() == mark_of(code):
        if release.state_paths:
            gateway.volume_extract(host, volume, layout_tar(release), timeout=60)
        return ""
    gateway.run(host, ["mkdir", "-p", volume], timeout=10)
    # Not there, half there (a worker died while unpacking), or another app's of the same name
    # left there: made anew. The layout first, so `releases` is a directory of ours (not a
    # link an app from before releases put there) before anything under it is removed.
    gateway.volume_extract(host, volume, layout_tar(release), timeout=60)
    gone = gateway.run(
        host, ["rm", "-rf", "--one-file-system", "--", app.release_path(host, code.number)], timeout=120
    )
    if not gone.ok:
        raise FilesMissing(
            f"{host.name}: cannot clear {app.release_path(host, code.number)} for release {code.number}: "
            f"{gone.stderr.decode(errors='replace')[-300:]}"
        )
    if code.source == Release.Source.ARCHIVE and not code.archive:
        raise FilesMissing(
            f"The files of release {code.number} were pruned (retention keeps the newest releases); "
            "deploy a newer release."
        )
    if code.source == Release.Source.HOST:
        _copy_from_peer(app, host, code, sources or [])
        gateway.volume_extract(host, volume, layout_tar(release), timeout=60)
        what = f"copied the files of release {code.number} from another host"
    else:
        data = cache.get(release.pk) if cache is not None else None
        if data is None:
            data = layout_tar(release, code)
            if cache is not None:
                cache[release.pk] = data
        gateway.volume_extract(host, volume, data, timeout=300)
        what = f"unpacked release {code.number}" + (f" ({code.files} files)" if code.files else "")
    gateway.volume_write(host, volume, marker(code.number), f"{mark_of(code)}\n")
    return what


def mark_of(code: Release) -> str:
    """What the mark of complete files holds: the archive's sha256 (files moved from a VM: where
    they came from)."""
    return code.sha256 or ("moved from a VM" if code.source == Release.Source.HOST else code.source)


def _copy_from_peer(app: App, target: Host, code: Release, sources: list[Host]) -> None:
    """Copied from the first host that has them complete, checksummed."""
    errors = []
    for source in sources:
        if source.pk == target.pk:
            continue
        try:
            if gateway.volume_read(source, app.volume_path(source), marker(code.number)) is None:
                continue
            treecopy.copy_tree(
                vm=source.endpoint,
                source=app.release_path(source, code.number),
                host_run=lambda argv, **kw: gateway.run(target, argv, **kw),
                host_endpoint=target.endpoint,
                target=app.release_path(target, code.number),
                excludes=[],
                progress=lambda done, total: None,
                source_on_host=True,
            )
            return
        except (HostError, treecopy.CopyFailed) as exc:
            errors.append(f"{source.name}: {exc}")
    raise FilesMissing(
        f"No host has the files of release {code.number} to copy to {target.name}"
        + (f" ({'; '.join(errors)})" if errors else "")
        + "; deploy an uploaded release."
    )


def prune(app: App, host: Host, numbers: Iterable[int]) -> list[int]:
    """Remove the files of these releases from the host; the numbers removed (or not there)."""
    volume = app.volume_path(host)
    removed = []
    for number in numbers:
        # The mark goes first: a half-removed directory must never look ready.
        gateway.run(host, ["rm", "-f", "--", f"{volume}/{marker(number)}"], timeout=30)
        result = gateway.run(
            host, ["rm", "-rf", "--one-file-system", "--", f"{volume}/releases/{number}"], timeout=120
        )
        if not result.ok:
            log.warning(
                "release %s of %s on %s stays: %s",
                number,
                app.slug,
                host.name,
                result.stderr.decode(errors="replace")[-300:],
            )
            continue
        removed.append(number)
    return removed
