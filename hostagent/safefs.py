"""File work inside an app's volume, as root on the host, that never follows a link the app made.

The app's container runs as root and can put anything into its volume: `conf -> /etc`, a marker
that is a symlink to /etc/passwd, a device node, a fifo. Every path here is resolved one
component at a time from a directory fd, with O_NOFOLLOW, so a symlink anywhere inside the
volume is never followed; files are created relative to a directory fd with O_EXCL after
whatever was at their place was unlinked (never written through). Only the volume directory
itself (`root`, computed by the portal) is opened by its full path.

Commands (see __main__ and serve): extract, pack, manifest, write-file, read-file, remove.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import lzma
import os
import stat
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, Any

from hostagent.protocol import EXTRACT_MAX_BYTES, EXTRACT_MAX_MEMBERS

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_PATH opens the entry itself (a symlink too) without reading it: nothing of a device or fifo
# is touched before fstat says what it is.
PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Permission bits kept from an archive: never setuid or setgid on the host.
MODE_MASK = 0o7777 & ~(stat.S_ISUID | stat.S_ISGID)
MAX_DEPTH = 200  # directory levels walked (one open fd each)
READ_MAX = 1 << 20
DRAIN_MAX = 256 << 20  # what is read and dropped after a refusal, so the sender sees the message
CHUNK = 1 << 20
_NOT_A_DIR = (errno.ENOTDIR, errno.ELOOP)


class Refused(ValueError):
    """The request would leave the volume, or the volume holds something that is not allowed.
    The message names the path and the reason."""


class NotThere(Refused):
    """A directory on the way is missing, or is not a directory (a symlink counts as not there)."""


def parts(name: str) -> list[str]:
    """The components of a name inside the volume ('' and '.' dropped); refuses what would leave it."""
    if "\0" in name:
        raise Refused(f"{name!r}: a NUL byte in the name")
    if name.startswith("/"):
        raise Refused(f"{name}: absolute names are refused; only names inside the volume")
    out = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in out:
        raise Refused(f"{name}: '..' is refused; it would leave the volume")
    return out


def open_root(root: str) -> int:
    """The volume directory, by its full path (the portal computed it); itself not a symlink."""
    if not root.startswith("/"):
        raise Refused(f"{root}: the volume directory must be an absolute path")
    try:
        return os.open(root, DIR_FLAGS)
    except OSError as exc:
        if exc.errno in _NOT_A_DIR:
            raise Refused(f"{root}: the volume directory is a symlink or not a directory") from None
        raise


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


def walk(root_fd: int, dirs: list[str], name: str, *, make: bool = False) -> int:
    """A new fd for the directory dirs (components) under root_fd, never through a symlink.

    make: missing directories are made, and a symlink or file where a directory belongs is
    replaced by one (unlinked, not followed); else NotThere."""
    current = os.dup(root_fd)
    try:
        for depth, part in enumerate(dirs):
            if depth >= MAX_DEPTH:
                raise Refused(f"{name}: deeper than {MAX_DEPTH} directories")
            for _ in range(5):  # the app may change the entry meanwhile: try again a few times
                try:
                    child = os.open(part, DIR_FLAGS, dir_fd=current)
                    break
                except FileNotFoundError:
                    if not make:
                        raise NotThere(f"{name}: {part} is missing") from None
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=current)
                except OSError as exc:
                    if exc.errno not in _NOT_A_DIR:
                        raise
                    if not make:
                        raise NotThere(
                            f"{name}: {part} is a symlink or not a directory; not followed"
                        ) from None
                    _clear(current, part, name)
            else:
                raise Refused(f"{name}: cannot make the directory {part}: it keeps changing")
            os.close(current)
            current = child
        return current
    except BaseException:
        os.close(current)
        raise


def _clear(dir_fd: int, leaf: str, name: str) -> str:
    """Remove what is at leaf (never following it); the kind removed, '' if nothing was there."""
    try:
        st = os.stat(leaf, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return ""
    kind = _kind(st.st_mode)
    try:
        if stat.S_ISDIR(st.st_mode):
            os.rmdir(leaf, dir_fd=dir_fd)
        else:
            os.unlink(leaf, dir_fd=dir_fd)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise Refused(f"{name}: a directory with files in it is in the way; not replaced") from None
        raise
    return kind


def _create(dir_fd: int, leaf: str, name: str) -> tuple[int, str]:
    """A new, empty regular file at leaf (what was there unlinked first); its fd and what it replaced."""
    replaced = ""
    for _ in range(5):
        replaced = _clear(dir_fd, leaf, name) or replaced
        try:
            return os.open(leaf, NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd), replaced
        except FileExistsError:
            continue
    raise Refused(f"{name}: cannot create the file: something keeps appearing at its place")


def _reopen(path_fd: int) -> int:
    """Open for reading the very inode an O_PATH fd holds (no name is looked up again)."""
    return os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_CLOEXEC)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _drain(stream: IO[bytes]) -> None:
    """Read and drop the rest of the input (bounded), so the sender is not cut off mid-write
    and sees the refusal rather than a broken connection."""
    left = DRAIN_MAX
    while left > 0:
        chunk = stream.read(min(CHUNK, left))
        if not chunk:
            return
        left -= len(chunk)


# --- extract -----------------------------------------------------------------------------------


def extract(
    root: str,
    stream: IO[bytes],
    *,
    max_bytes: int = EXTRACT_MAX_BYTES,
    max_members: int = EXTRACT_MAX_MEMBERS,
    same_owner: bool = False,
    drain: bool = True,
) -> dict[str, Any]:
    """Unpack a tar stream (plain, gzip, bzip2 or xz) under root: regular files, directories,
    symlinks (made as links, never followed), hard links to files unpacked before them from the
    same stream. Devices, fifos, absolute names and '..' are refused. Owners are kept only with
    same_owner (numeric); setuid and setgid bits never. Existing directories keep their mode."""
    root_fd = open_root(root)
    counts = {"members": 0, "files": 0, "dirs": 0, "symlinks": 0, "hardlinks": 0, "bytes": 0, "replaced": 0}
    state = _Extraction(root_fd, counts, max_bytes, same_owner)
    try:
        try:
            tar = tarfile.open(fileobj=stream, mode="r|*", errors="surrogateescape")  # noqa: SIM115
        except tarfile.TarError as exc:
            raise Refused(f"not a readable tar stream (plain, gzip, bzip2 or xz): {exc}") from None
        with tar:
            try:
                while (member := tar.next()) is not None:
                    counts["members"] += 1
                    if counts["members"] > max_members:
                        raise Refused(
                            f"{member.name}: more than {max_members} members in the archive; refused"
                        )
                    state.one(tar, member)
                    tar.members = []  # type: ignore[attr-defined]  # a million members must not stay in memory
            except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
                raise Refused(
                    f"the tar stream is damaged after {counts['members']} member(s): {exc or 'it ends early'}"
                ) from None
        state.finish_dirs()
    except (Refused, OSError):
        if drain:
            _drain(stream)
        raise
    finally:
        os.close(root_fd)
    return counts


class _Extraction:
    def __init__(self, root_fd: int, counts: dict[str, int], max_bytes: int, same_owner: bool) -> None:
        self.root_fd = root_fd
        self.counts = counts
        self.max_bytes = max_bytes
        self.same_owner = same_owner
        self.files: set[str] = set()  # regular files unpacked so far (hard-link targets)
        # Directories made, with (mode, uid, gid, mtime) to set once their contents are in.
        self.new_dirs: list[tuple[str, tuple[int, int, int, float]]] = []

    def one(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = member.name
        path = parts(name)
        if member.ischr() or member.isblk() or member.isfifo():
            raise Refused(f"{name}: devices and fifos are refused")
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise Refused(f"{name}: unsupported tar member type {member.type!r}")
        if not path:
            if member.isdir():
                return  # the volume directory itself: left as it is
            raise Refused(f"{name}: names the volume directory itself, but is not a directory")
        try:
            parent = walk(self.root_fd, path[:-1], name, make=True)
            try:
                leaf = path[-1]
                if member.isdir():
                    self._dir(parent, leaf, path, member)
                elif member.issym():
                    self._symlink(parent, leaf, member)
                elif member.islnk():
                    self._hardlink(parent, leaf, path, member)
                else:
                    self._file(tar, parent, leaf, path, member)
            finally:
                os.close(parent)
        except OSError as exc:
            raise OSError(f"{name}: {exc.strerror or exc}") from None

    def _dir(self, parent: int, leaf: str, path: list[str], member: tarfile.TarInfo) -> None:
        try:
            os.close(os.open(leaf, DIR_FLAGS, dir_fd=parent))
            return  # an existing directory keeps its mode and owner (--no-overwrite-dir)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno not in _NOT_A_DIR:
                raise
            _clear(parent, leaf, member.name)
            self.counts["replaced"] += 1
        os.mkdir(leaf, 0o700, dir_fd=parent)  # its own mode once its contents are in
        self.new_dirs.append(("/".join(path), (member.mode, member.uid, member.gid, member.mtime)))
        self.counts["dirs"] += 1

    def _symlink(self, parent: int, leaf: str, member: tarfile.TarInfo) -> None:
        if _clear(parent, leaf, member.name):
            self.counts["replaced"] += 1
        os.symlink(member.linkname, leaf, dir_fd=parent)
        if self.same_owner:
            os.chown(leaf, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        with contextlib.suppress(OSError, NotImplementedError):
            os.utime(leaf, (member.mtime, member.mtime), dir_fd=parent, follow_symlinks=False)
        self.counts["symlinks"] += 1

    def _hardlink(self, parent: int, leaf: str, path: list[str], member: tarfile.TarInfo) -> None:
        try:
            target = parts(member.linkname)
        except Refused as exc:
            raise Refused(f"{member.name}: a hard link to {exc}") from None
        if "/".join(target) not in self.files:
            raise Refused(
                f"{member.name}: a hard link to {member.linkname!r}, which is not a file unpacked "
                "before it from this archive; refused"
            )
        source = walk(self.root_fd, target[:-1], member.name)
        try:
            st = os.stat(target[-1], dir_fd=source, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise Refused(f"{member.name}: its link target {member.linkname!r} is no longer a file")
            if _clear(parent, leaf, member.name):
                self.counts["replaced"] += 1
            os.link(target[-1], leaf, src_dir_fd=source, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(source)
        self.files.add("/".join(path))
        self.counts["hardlinks"] += 1

    def _file(
        self, tar: tarfile.TarFile, parent: int, leaf: str, path: list[str], member: tarfile.TarInfo
    ) -> None:
        if self.counts["bytes"] + member.size > self.max_bytes:
            raise Refused(f"{member.name}: the archive holds more than {self.max_bytes} bytes; refused")
        fd, replaced = _create(parent, leaf, member.name)
        try:
            if replaced:
                self.counts["replaced"] += 1
            data = tar.extractfile(member)
            if data is not None:
                while chunk := data.read(CHUNK):
                    _write_all(fd, chunk)
            if self.same_owner:
                os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, member.mode & MODE_MASK)
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)
        self.files.add("/".join(path))
        self.counts["files"] += 1
        self.counts["bytes"] += member.size

    def finish_dirs(self) -> None:
        """Modes, owners and times of the directories made, now that their contents are in."""
        for name, (mode, uid, gid, mtime) in reversed(self.new_dirs):
            try:
                fd = walk(self.root_fd, name.split("/"), name)
            except NotThere:
                continue  # replaced meanwhile (by the app or a later member): not ours to change
            try:
                if self.same_owner:
                    os.fchown(fd, uid, gid)
                os.fchmod(fd, mode & MODE_MASK)
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)


# --- pack --------------------------------------------------------------------------------------


class _Exactly:
    """size bytes from fd: cut if the file grew, padded with zeros if it shrank (tar does the
    same; the checksums afterwards tell)."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.left = size
        self.changed = False

    def read(self, size: int = CHUNK) -> bytes:
        size = min(size, self.left)
        if size <= 0:
            return b""
        data = os.read(self.fd, size)
        if not data:
            self.changed = True
            data = bytes(size)
        self.left -= len(data)
        return data


def pack(root: str, names: Iterable[str], out: IO[bytes]) -> dict[str, Any]:
    """Write a tar stream of the named entries under root to out: files, directories and
    symlinks (as links), resolved without following any symlink, so a directory the app swapped
    for a link to host files after it was listed is skipped, not read through. Names that are
    gone or are not files, directories or links are left out and counted."""
    root_fd = open_root(root)
    counts: dict[str, Any] = {"members": 0, "bytes": 0, "gone": [], "changed": [], "skipped": []}
    seen: dict[tuple[int, int], str] = {}
    try:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, errors="surrogateescape") as tar:
            for name in names:
                path = parts(name)
                if not path:
                    continue
                member = "/".join(path)
                try:
                    parent = walk(root_fd, path[:-1], name)
                except NotThere:
                    counts["gone"].append(member)
                    continue
                try:
                    _pack_one(tar, parent, path[-1], member, counts, seen)
                finally:
                    os.close(parent)
    finally:
        os.close(root_fd)
    return counts


def _pack_one(
    tar: tarfile.TarFile,
    parent: int,
    leaf: str,
    member: str,
    counts: dict[str, Any],
    seen: dict[tuple[int, int], str],
) -> None:
    try:
        pfd = os.open(leaf, PATH_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        counts["gone"].append(member)
        return
    try:
        st = os.fstat(pfd)
        info = tarfile.TarInfo(member)
        info.mode = st.st_mode & 0o7777
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = int(st.st_mtime)
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        elif stat.S_ISLNK(st.st_mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(leaf, dir_fd=parent)
            tar.addfile(info)
        elif stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in seen:
                info.type = tarfile.LNKTYPE
                info.linkname = seen[key]
                tar.addfile(info)
            else:
                fd = _reopen(pfd)
                try:
                    info.size = st.st_size
                    body = _Exactly(fd, st.st_size)
                    tar.addfile(info, body)  # type: ignore[arg-type]
                finally:
                    os.close(fd)
                if body.changed:
                    counts["changed"].append(member)
                seen[key] = member
                counts["bytes"] += st.st_size
        else:
            counts["skipped"].append(f"{member} ({_kind(st.st_mode)})")
            return
        counts["members"] += 1
    finally:
        os.close(pfd)


# --- manifest ----------------------------------------------------------------------------------


def manifest(root: str, excludes: list[str] | None = None) -> dict[str, Any]:
    """Everything under root, without following a symlink or leaving its file system:
    [kind, size, path, extra] per entry, kind as find's %y ('f', 'd', 'l', 'p', 's', 'c', 'b');
    extra is the sha256 of a regular file, the target text of a symlink, else ''."""
    skip = [e.strip("/") for e in excludes or [] if e.strip("/")]
    root_fd = open_root(root)
    try:
        device = os.fstat(root_fd).st_dev
        entries = list(_entries(root_fd, "", device, skip, 0))
    finally:
        os.close(root_fd)
    return {"root": root, "entries": entries}


_FIND_KIND = {"file": "f", "directory": "d", "symlink": "l", "fifo": "p", "socket": "s"}


def _entries(dir_fd: int, prefix: str, device: int, skip: list[str], depth: int) -> Iterator[list[Any]]:
    if depth >= MAX_DEPTH:
        raise Refused(f"{prefix.rstrip('/')}: deeper than {MAX_DEPTH} directories")
    with os.scandir(dir_fd) as listing:
        names = sorted(entry.name for entry in listing)
    for leaf in names:
        path = prefix + leaf
        if any(path == ex or path.startswith(ex + "/") for ex in skip):
            continue
        try:
            pfd = os.open(leaf, PATH_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            continue  # gone since the listing
        try:
            st = os.fstat(pfd)
            kind = _kind(st.st_mode)
            letter = _FIND_KIND.get(kind) or ("c" if stat.S_ISCHR(st.st_mode) else "b")
            if kind == "file":
                yield [letter, st.st_size, path, _sha256(pfd)]
            elif kind == "symlink":
                yield [letter, st.st_size, path, os.readlink(leaf, dir_fd=dir_fd)]
            else:
                yield [letter, st.st_size, path, ""]
            if kind == "directory" and st.st_dev == device:
                try:
                    child = os.open(leaf, DIR_FLAGS, dir_fd=dir_fd)
                except OSError as exc:
                    if exc.errno in _NOT_A_DIR or exc.errno == errno.ENOENT:
                        continue  # swapped for something else since: not followed
                    raise
                try:
                    yield from _entries(child, path + "/", device, skip, depth + 1)
                finally:
                    os.close(child)
        finally:
            os.close(pfd)


def _sha256(path_fd: int) -> str:
    digest = hashlib.sha256()
    fd = _reopen(path_fd)
    try:
        while chunk := os.read(fd, CHUNK):
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


# --- single files: markers and stale entries ---------------------------------------------------


def write_file(root: str, name: str, content: str) -> dict[str, Any]:
    """Write content (UTF-8) to a new regular file at name; what was at its place (a symlink, a
    file) is unlinked first, never written through. Directories on the way must be real ones."""
    path = parts(name)
    if not path:
        raise Refused(f"{name!r}: names the volume directory itself, not a file")
    root_fd = open_root(root)
    try:
        parent = walk(root_fd, path[:-1], name)
    finally:
        os.close(root_fd)
    try:
        fd, replaced = _create(parent, path[-1], name)
        try:
            data = content.encode("utf-8", "surrogateescape")
            _write_all(fd, data)
            os.fchmod(fd, 0o644)
        finally:
            os.close(fd)
    finally:
        os.close(parent)
    return {"name": name, "bytes": len(data), "replaced": replaced}


def read_file(root: str, name: str, max_bytes: int = 65536) -> dict[str, Any]:
    """The content of the regular file at name (up to max_bytes), or content None with the kind
    of what is there instead ('missing', 'symlink', 'directory', ...). Nothing is followed."""
    path = parts(name)
    if not path:
        raise Refused(f"{name!r}: names the volume directory itself, not a file")
    max_bytes = max(0, min(int(max_bytes), READ_MAX))
    try:
        root_fd = open_root(root)
    except FileNotFoundError:
        return {"name": name, "kind": "missing", "content": None}
    try:
        try:
            parent = walk(root_fd, path[:-1], name)
        except NotThere:
            return {"name": name, "kind": "missing", "content": None}
    finally:
        os.close(root_fd)
    try:
        try:
            pfd = os.open(path[-1], PATH_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            return {"name": name, "kind": "missing", "content": None}
    finally:
        os.close(parent)
    try:
        kind = _kind(os.fstat(pfd).st_mode)
        if kind != "file":
            return {"name": name, "kind": kind, "content": None}
        fd = _reopen(pfd)
        try:
            data = os.read(fd, max_bytes)
        finally:
            os.close(fd)
    finally:
        os.close(pfd)
    return {"name": name, "kind": kind, "content": data.decode("utf-8", "surrogateescape")}


def remove(root: str, names: list[str]) -> dict[str, Any]:
    """Unlink the named entries that are not directories, never following a symlink: a directory
    on the way that is a symlink means the entry is not there. Directories are kept (listed)."""
    todo = [(name, parts(name)) for name in names]  # all checked before anything goes
    for name, path in todo:
        if not path:
            raise Refused(f"{name!r}: names the volume directory itself; refused")
    removed, absent, kept = 0, 0, []
    root_fd = open_root(root)
    try:
        for name, path in todo:
            try:
                parent = walk(root_fd, path[:-1], name)
            except NotThere:
                absent += 1
                continue
            try:
                st = os.stat(path[-1], dir_fd=parent, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    kept.append(name)
                    continue
                os.unlink(path[-1], dir_fd=parent)
                removed += 1
            except FileNotFoundError:
                absent += 1
            except IsADirectoryError:
                kept.append(name)  # became a directory since the stat
            finally:
                os.close(parent)
    finally:
        os.close(root_fd)
    return {"removed": removed, "absent": absent, "kept": kept[:100]}
