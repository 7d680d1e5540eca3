"""The Debian releases and packages a recipe may name, read from the distribution's lists that apt
fetched on this machine (`apt-get update`), so an unknown package is refused with its name before
a build starts rather than a minute into it.

apt itself says where its lists are and what they hold (`apt-get indextargets`), and opens them
whatever their compression (`apt-helper cat-file`); nothing here knows a mirror's address. The
same sources are what a build installs from (rootfs.debian_tar), so what is checked is what is
built, as long as the lists are fresh: a build that finds them stale fails with apt's words."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from apps.images.recipe import PACKAGE

APT_HELPER = "/usr/lib/apt/apt-helper"


class ListsUnavailable(RuntimeError):
    """apt's lists cannot be read here (apt missing, or never updated)."""


@dataclass(frozen=True)
class Source:
    """One list apt fetched: a suite's component of a Debian archive."""

    uri: str  # the archive, e.g. http://mirror/debian/
    suite: str  # as in the sources, e.g. bookworm-security
    component: str
    filename: Path

    @property
    def deb_line(self) -> str:
        return f"deb {self.uri} {self.suite} {self.component}"


@dataclass
class Release:
    """A Debian release as this machine knows it: its suites (bookworm, bookworm-updates,
    bookworm-security) and, once read, every package with its versions and what provides what."""

    name: str
    sources: list[Source] = field(default_factory=list)
    versions: dict[str, set[str]] = field(default_factory=dict)
    provided_by: dict[str, set[str]] = field(default_factory=dict)
    fetched: datetime | None = None  # when apt last updated the oldest of its lists

    @property
    def deb_lines(self) -> list[str]:
        return sorted({source.deb_line for source in self.sources})


def _indextargets() -> list[dict[str, str]]:
    try:
        out = subprocess.run(
            ["apt-get", "indextargets", "Created-By: Packages"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ListsUnavailable(f"apt's package lists cannot be read on this machine: {exc}") from exc
    records: list[dict[str, str]] = []
    for block in out.split("\n\n"):
        record = {}
        for line in block.splitlines():
            key, _, value = line.partition(": ")
            record[key] = value.strip()
        if record.get("Filename"):
            records.append(record)
    return records


def family(suite: str) -> str:
    """The release a suite belongs to: bookworm-updates and bookworm-security are bookworm's."""
    return suite.split("-", 1)[0].split("/", 1)[0]


def sources() -> dict[str, list[Source]]:
    """The releases apt has lists for here, by name, with their lists (main and other components)."""
    found: dict[str, list[Source]] = {}
    for record in _indextargets():
        suite = record.get("Release", "")
        path = Path(record["Filename"])
        if not suite or not record.get("Repo-URI") or not path.exists():
            continue
        found.setdefault(family(suite), []).append(
            Source(record["Repo-URI"], suite, record.get("Component", "main"), path)
        )
    return found


_cache: dict[str, tuple[tuple[tuple[str, int], ...], Release]] = {}
_lock = threading.Lock()


def release(name: str) -> Release:
    """The release's packages, read from apt's lists (a few seconds; kept while the lists stay
    the same). KeyError with the releases there are when apt has no list for `name`."""
    known = sources()
    if name not in known:
        raise KeyError(name)
    stamp = tuple(sorted((str(s.filename), s.filename.stat().st_mtime_ns) for s in known[name]))
    with _lock:
        cached = _cache.get(name)
        if cached and cached[0] == stamp:
            return cached[1]
    found = Release(name, sources=known[name])
    for source in known[name]:
        _read(source, found)
    oldest = min(s.filename.stat().st_mtime for s in known[name])
    found.fetched = datetime.fromtimestamp(oldest, tz=UTC)
    with _lock:
        _cache[name] = (stamp, found)
    return found


def _read(source: Source, into: Release) -> None:
    """Package, Version and Provides of every stanza of one list."""
    try:
        process = subprocess.Popen(
            [APT_HELPER, "cat-file", str(source.filename)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise ListsUnavailable(f"{source.filename} cannot be read: {exc}") from exc
    assert process.stdout is not None
    name = version = ""
    provides = ""
    for line in [*process.stdout, ""]:
        if line.startswith("Package: "):
            name = line[9:].strip()
        elif line.startswith("Version: "):
            version = line[9:].strip()
        elif line.startswith("Provides: "):
            provides = line[10:].strip()
        elif not line.strip():
            if name:
                into.versions.setdefault(name, set()).add(version)
                for item in filter(None, (part.strip() for part in provides.split(","))):
                    into.provided_by.setdefault(item.split()[0], set()).add(name)
            name = version = provides = ""
    if process.wait() != 0:
        raise ListsUnavailable(f"apt could not open {source.filename}")


def problems(release_name: str, wanted: Iterable[str]) -> list[str]:
    """What is wrong with a recipe's release and packages, one message per problem, each naming
    the package and what there is instead; [] when everything is in the lists."""
    try:
        known = release(release_name)
    except KeyError:
        there = ", ".join(sorted(sources())) or "none: run apt-get update on the portal's worker machines"
        return [
            f"Debian release {release_name!r} is not in this portal's package lists (it has: {there}). "
            "A release is added by adding it to apt's sources on the portal's machines."
        ]
    said: list[str] = []
    for item in wanted:
        match = PACKAGE.fullmatch(item)
        name, pinned = (match.group(1), match.group(2)) if match else (item, None)
        versions = known.versions.get(name)
        if versions is None:
            providers = sorted(known.provided_by.get(name, ()))
            if providers:
                said.append(
                    f"{name} is a virtual package in {release_name}; name one that provides it: "
                    + ", ".join(providers[:8])
                    + (", …" if len(providers) > 8 else "")
                    + "."
                )
            else:
                said.append(
                    f"{name} is not a package in Debian {release_name} (checked against {_fetched(known)})."
                )
        elif pinned and pinned not in versions:
            said.append(
                f"{name} has no version {pinned} in {release_name}; there are: {', '.join(sorted(versions))}."
            )
    return said


def versions(release_name: str, name: str) -> list[str]:
    """The versions of a package in the release's lists, oldest first (by dpkg's ordering)."""
    found = sorted(release(release_name).versions.get(name, ()))
    return sorted(found, key=_DpkgVersion)


def _fetched(known: Release) -> str:
    when = known.fetched.strftime("%Y-%m-%d %H:%M UTC") if known.fetched else "an unknown time"
    return f"apt's lists from {when}"


class _DpkgVersion:
    """Orders versions as dpkg does, through dpkg itself (`dpkg --compare-versions`)."""

    def __init__(self, version: str) -> None:
        self.version = version

    def __lt__(self, other: _DpkgVersion) -> bool:
        return (
            subprocess.run(
                ["dpkg", "--compare-versions", self.version, "lt", other.version],
                check=False,
                env={**os.environ, "LC_ALL": "C"},
            ).returncode
            == 0
        )
