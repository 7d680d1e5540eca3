"""A directory packed into a tar.gz for a release, checked by the rules the portal applies to
an archive, so a mistake is named here before anything is uploaded.

Nothing is left out silently: a link that points outside the directory (absolute, or escaping
with `..`), a socket, a FIFO or a device stops the packing with the path named, since the app
would otherwise run without a file its developer sees on disk."""

from __future__ import annotations

import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from slipway_cli.errors import FAILED, CliError

# Kept in memory up to this size, then in a temporary file that goes when it is closed.
IN_MEMORY = 16 * 1024 * 1024
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


@dataclass
class Packed:
    fileobj: IO[bytes]
    name: str
    size: int
    files: int  # regular files, as the portal counts them


class PackError(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, FAILED)


def link_escapes(relative: str, target: str) -> bool:
    """Whether a link at `relative` (inside the directory) pointing at `target` leaves it: an
    absolute target names the container's filesystem, not the directory's."""
    if target.startswith("/"):
        return True
    depth: list[str] = relative.split("/")[:-1]
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not depth:
                return True
            depth.pop()
        else:
            depth.append(part)
    return False


def _kind(mode: int) -> str:
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file, directory or link"


def _walk(root: Path) -> list[tuple[str, Path]]:
    """Every entry under root as (path in the archive, path on disk), parents before children,
    in a stable order; refuses what the portal would refuse."""
    found: list[tuple[str, Path]] = []
    problems: list[str] = []

    def visit(directory: Path, prefix: str) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError as exc:
            problems.append(f"{prefix or '.'}: cannot read the directory ({exc.strerror})")
            return
        for entry in entries:
            relative = f"{prefix}{entry.name}"
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                target = os.readlink(entry.path)
                if link_escapes(relative, target):
                    problems.append(f"{relative} is a link to {target}, outside the directory")
                    continue
                found.append((relative, Path(entry.path)))
            elif stat.S_ISDIR(info.st_mode):
                found.append((relative, Path(entry.path)))
                visit(Path(entry.path), f"{relative}/")
            elif stat.S_ISREG(info.st_mode):
                found.append((relative, Path(entry.path)))
            else:
                problems.append(f"{relative} is {_kind(info.st_mode)}")

    visit(root, "")
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise PackError(f"Cannot pack {root}:\n  " + "\n  ".join(shown))
    return found


def pack_directory(root: Path) -> Packed:
    """The directory's contents (not the directory itself) as a gzipped tar."""
    try:
        entries = _walk(root)
    except OSError as exc:  # an entry that went while it was listed
        raise PackError(f"Cannot pack {root}: {exc.filename or root}: {exc.strerror}") from None
    spool = tempfile.SpooledTemporaryFile(max_size=IN_MEMORY)  # noqa: SIM115 - the caller closes it
    files = 0
    try:
        with tarfile.open(fileobj=spool, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
            for name, path in entries:
                info = tar.gettarinfo(str(path), arcname=name)
                # Who owns the files on the developer's machine means nothing on the hosts.
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if info.isreg():
                    files += 1
                    with open(path, "rb") as handle:
                        tar.addfile(info, handle)
                else:
                    tar.addfile(info)
    except OSError as exc:
        spool.close()
        where = exc.filename or root
        raise PackError(f"Cannot pack {root}: {where}: {exc.strerror}") from None
    except BaseException:
        spool.close()
        raise
    size = spool.tell()
    spool.seek(0)
    return Packed(fileobj=spool, name=f"{root.resolve().name or 'app'}.tar.gz", size=size, files=files)


def open_archive(path: Path) -> Packed:
    """An archive the user made: uploaded as it is (the portal checks its members)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - the caller closes it
        size = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        raise PackError(f"Cannot read {path}: {exc.strerror}") from None
    if not path.name.endswith(ARCHIVE_SUFFIXES) and not tarfile.is_tarfile(handle):
        handle.close()
        raise PackError(f"{path} is neither a directory nor a tar archive ({', '.join(ARCHIVE_SUFFIXES)}).")
    handle.seek(0)
    return Packed(fileobj=handle, name=path.name, size=size, files=-1)


def prepare(path: Path) -> Packed:
    if path.is_dir():
        return pack_directory(path)
    if path.is_file():
        return open_archive(path)
    raise PackError(f"{path} is neither a directory nor a tar archive.")
