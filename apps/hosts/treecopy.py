"""Copy a directory tree from one machine to another over SSH: a VM's app directory into the
app's volume on a host, or a volume from one host to another. Streamed through the worker over
two SSH channels (tar out of the source, tar into the target), checksummed on both ends, and
resumable: a run after an interruption sends only what is missing or different.

The source side only reads. Paths come from `find` there and are checked before use on the target.

On a host, the files under an app's volume are the app's: its container (root inside) may have
made any of them a symlink to host files, at any moment. Everything on a host therefore goes
through its agent, which resolves each path one component at a time and follows no symlink:
the listing and checksums (`hostagent manifest`), the unpacking (`hostagent extract`, reading
the tar stream on its stdin), the removal of stale files (`hostagent remove`), and, when the
source is a host too, the packing (`hostagent pack`: tar would follow a directory the app swapped
for a link between the listing and the read). A VM's files are read with find, sha256sum and
tar: they are the VM owner's own, and the VM is not a host.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings

from apps.hosts.gateway import AGENT_ARGV
from apps.hosts.transport import CommandResult, Endpoint, HostError, ssh

Run = Callable[..., CommandResult]
Progress = Callable[[int, int], None]

# sha256sum of every regular file under $1, paths relative ("./x"), NUL-free output (escaped).
_SUMS = 'cd "$1" && find . -xdev -type f -print0 | xargs -0 -r sha256sum --'
CHUNK = 1 << 20


class CopyFailed(HostError):
    pass


@dataclass(frozen=True)
class Entry:
    kind: str  # "f" file, "d" directory, "l" symlink
    size: int


@dataclass
class Manifest:
    entries: dict[str, Entry] = field(default_factory=dict)
    sums: dict[str, str] = field(default_factory=dict)

    @property
    def files(self) -> int:
        return sum(1 for e in self.entries.values() if e.kind == "f")

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries.values() if e.kind == "f")


@dataclass
class CopyResult:
    files: int
    size: int
    sent_files: int
    sent_bytes: int
    removed: int
    seconds: float


def safe_relative(path: str) -> bool:
    """A path from a listing that may be used under the volume: relative, no '..', no NUL."""
    if not path or path.startswith("/") or "\0" in path:
        return False
    return ".." not in path.split("/") and posixpath.normpath(path) == path


def excluded(path: str, excludes: list[str]) -> bool:
    return any(path == ex or path.startswith(ex.rstrip("/") + "/") for ex in excludes)


def parse_listing(data: bytes) -> dict[str, Entry]:
    """`find DIR -mindepth 1 -printf '%y %s %P\\0'`."""
    out: dict[str, Entry] = {}
    for record in data.split(b"\0"):
        if not record:
            continue
        kind, size, path = record.decode("utf-8", "surrogateescape").split(" ", 2)
        if kind in ("f", "d", "l") and safe_relative(path):
            out[path] = Entry(kind, int(size))
    return out


def parse_sums(data: bytes) -> dict[str, str]:
    """sha256sum's output: 'HASH  ./path', with '\\' before lines whose name has '\\' or a newline."""
    out: dict[str, str] = {}
    for line in data.decode("utf-8", "surrogateescape").split("\n"):
        if not line:
            continue
        escaped = line.startswith("\\")
        if escaped:
            line = line[1:]
        digest, _, name = line.partition("  ")
        if escaped:
            name = name.replace("\\n", "\n").replace("\\\\", "\\")
        if name.startswith("./"):
            name = name[2:]
        if len(digest) == 64 and safe_relative(name):
            out[name] = digest
    return out


def parse_agent_manifest(data: bytes) -> tuple[dict[str, Entry], dict[str, str]]:
    """`hostagent manifest`: entries [kind, size, path, sha256 or link text] as JSON."""
    document = json.loads(data)
    entries: dict[str, Entry] = {}
    sums: dict[str, str] = {}
    for record in document.get("entries", []):
        kind, size, path, extra = record
        if kind in ("f", "d", "l") and isinstance(path, str) and safe_relative(path):
            entries[path] = Entry(kind, int(size))
            if kind == "f" and isinstance(extra, str) and len(extra) == 64:
                sums[path] = extra
    return entries, sums


def manifest(
    run: Run, root: str, excludes: list[str], where: str, *, missing_ok: bool = False, agent: bool = False
) -> Manifest:
    """What is under root (files with their checksums), as `run` sees it; `agent`: root is on a
    host, listed by its agent without following any symlink."""
    limit = settings.RELOCATION_MAX_LISTING
    if agent:
        return _agent_manifest(run, root, excludes, where, missing_ok=missing_ok)
    listing = run(
        ["find", root, "-xdev", "-mindepth", "1", "-printf", "%y %s %P\\0"], timeout=120, max_output=limit
    )
    if listing.exit_code != 0:
        text = listing.stderr.decode(errors="replace").strip()
        if missing_ok and "No such file" in text:
            return Manifest()
        raise CopyFailed(f"{where}: cannot list {root}: {text[-300:] or f'exit code {listing.exit_code}'}")
    if listing.truncated:
        raise CopyFailed(f"{where}: {root} has too many files to list (over {limit} bytes of names)")
    sums = run(["sh", "-c", _SUMS, "sh", root], timeout=600, max_output=limit)
    if sums.exit_code != 0 or sums.truncated:
        text = sums.stderr.decode(errors="replace").strip()
        raise CopyFailed(
            f"{where}: cannot checksum the files under {root}: {text[-300:] or 'output over the limit'}"
        )
    entries = {path: e for path, e in parse_listing(listing.stdout).items() if not excluded(path, excludes)}
    checksums = {path: digest for path, digest in parse_sums(sums.stdout).items() if path in entries}
    return Manifest(entries, checksums)


def _agent_manifest(run: Run, root: str, excludes: list[str], where: str, *, missing_ok: bool) -> Manifest:
    limit = settings.RELOCATION_MAX_LISTING
    argv = [*AGENT_ARGV, "manifest", root, *(f"--exclude={ex}" for ex in excludes)]
    listing = run(argv, timeout=600, max_output=limit)
    if listing.exit_code != 0:
        text = listing.stderr.decode(errors="replace").strip()
        if missing_ok and "No such file" in text:
            return Manifest()
        raise CopyFailed(f"{where}: cannot list {root}: {text[-300:] or f'exit code {listing.exit_code}'}")
    if listing.truncated:
        raise CopyFailed(f"{where}: {root} has too many files to list (over {limit} bytes of names)")
    try:
        entries, sums = parse_agent_manifest(listing.stdout)
    except (ValueError, TypeError) as exc:
        raise CopyFailed(
            f"{where}: the listing of {root} is not what hostagent manifest writes: {exc}"
        ) from None
    entries = {path: e for path, e in entries.items() if not excluded(path, excludes)}
    return Manifest(entries, {path: digest for path, digest in sums.items() if path in entries})


def copy_tree(
    *,
    vm: Endpoint,
    source: str,
    host_run: Run,
    host_endpoint: Endpoint,
    target: str,
    excludes: list[str],
    progress: Progress,
    stall: float | None = None,
    on_chunk: Callable[[int], None] | None = None,
    source_on_host: bool = False,
) -> CopyResult:
    """Make target on the host hold what source on the VM (or another host) holds, and prove it
    by checksums. `on_chunk(bytes so far)` runs after each chunk (tests cut the link there).
    `source_on_host`: `vm` is a host and source an app's volume there, read by its agent."""
    started = time.monotonic()
    stall = settings.RELOCATION_STALL_TIMEOUT if stall is None else stall

    def vm_run(argv: list[str], **kw: object) -> CommandResult:
        return ssh.run(vm, argv, **kw)  # type: ignore[arg-type]

    where = f"the host {vm.address}" if source_on_host else f"the VM {vm.address}"
    # The two sides are listed at once (two machines): a drain's move waits on this twice.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="copy-listing") as pool:
        listed = pool.submit(manifest, vm_run, source, excludes, where, agent=source_on_host)
        made = host_run(["mkdir", "-p", target], timeout=15)
        if made.exit_code != 0:
            raise CopyFailed(
                f"cannot make {target} on the host: {made.stderr.decode(errors='replace')[-300:]}"
            )
        # What is not copied is not the copy's to remove either (a move's marker file).
        there = manifest(host_run, target, excludes, "the host", agent=True)
        have = listed.result()
    wanted = [
        path
        for path, entry in sorted(have.entries.items())
        if entry.kind != "f" or there.sums.get(path) != have.sums.get(path)
    ]
    send_files = [p for p in wanted if have.entries[p].kind == "f"]
    total = sum(have.entries[p].size for p in send_files)
    progress(0, total)
    sent = 0
    pumped = bool(send_files or any(p not in there.entries for p in wanted))
    if pumped:
        sent = _pump(
            vm, source, host_endpoint, target, wanted, total, progress, stall, on_chunk, source_on_host
        )
    # Files the VM no longer has (left by an earlier attempt) go, so the volume matches it.
    extra = [p for p, e in there.entries.items() if e.kind == "f" and p not in have.entries]
    if extra:
        names = b"".join(p.encode("utf-8", "surrogateescape") + b"\0" for p in extra)
        gone = host_run([*AGENT_ARGV, "remove", target], stdin=names, timeout=60)
        if gone.exit_code != 0:
            raise CopyFailed(
                f"cannot remove stale files in {target}: {gone.stderr.decode(errors='replace')[-300:]}"
            )
    # Nothing sent and nothing removed: the target's listing is still the one just taken.
    after = manifest(host_run, target, excludes, "the host", agent=True) if pumped or extra else there
    wrong = [p for p, digest in have.sums.items() if after.sums.get(p) != digest]
    if wrong:
        sample = ", ".join(wrong[:3])
        raise CopyFailed(
            f"{len(wrong)} file(s) differ after the copy ({sample}{', ...' if len(wrong) > 3 else ''}); "
            "they may have changed on the VM during the copy. Run again to copy them anew."
        )
    progress(total, total)
    return CopyResult(
        files=have.files,
        size=have.size,
        sent_files=len(send_files),
        sent_bytes=sent,
        removed=len(extra),
        seconds=time.monotonic() - started,
    )


def _pump(
    vm: Endpoint,
    source: str,
    host: Endpoint,
    target: str,
    paths: list[str],
    total: int,
    progress: Progress,
    stall: float,
    on_chunk: Callable[[int], None] | None,
    source_on_host: bool = False,
) -> int:
    names = b"".join(b"./" + p.encode("utf-8", "surrogateescape") + b"\0" for p in paths)
    if source_on_host:
        packer = [*AGENT_ARGV, "pack", source]
    else:
        packer = ["tar", "-C", source, "--no-recursion", "--null", "-T", "-", "-cf", "-"]
    reader = ssh.stream(vm, packer, stall)
    try:
        # Owners kept (numeric), as tar does as root; setuid/setgid bits never. The bounds are
        # the listing's, with room for files that grow while they are read.
        unpacker = [
            *AGENT_ARGV,
            "extract",
            target,
            "--same-owner",
            f"--max-members={len(paths)}",
            f"--max-bytes={2 * total + (64 << 20)}",
        ]
        writer = ssh.stream(host, unpacker, stall)
        try:
            reader.write(names)
            reader.close_input()
            moved = 0
            last = 0.0
            while True:
                chunk = reader.read(CHUNK)
                if not chunk:
                    break
                try:
                    writer.write(chunk)
                except HostError:
                    # The agent may have stopped on a refusal: its message says more than the cut.
                    why = _ended(writer)
                    if why:
                        raise CopyFailed(f"unpacking on the host failed: {why[-300:]}") from None
                    raise
                moved += len(chunk)
                if on_chunk is not None:
                    on_chunk(moved)
                now = time.monotonic()
                if now - last > 0.25:
                    progress(min(moved, total), total)
                    last = now
            writer.close_input()
            code, err = reader.finish(stall)
            # tar (and pack) exit 1 when a file changed while it was read; the checksums decide then.
            if code not in (0, 1):
                what = "packing on the source host" if source_on_host else "the VM's tar"
                raise CopyFailed(f"{what} failed (exit code {code}): {err[-300:]}")
            code, err = writer.finish(max(stall, 60))
            if code != 0:
                raise CopyFailed(f"unpacking on the host failed (exit code {code}): {err[-300:]}")
            return moved
        finally:
            writer.close()
    finally:
        reader.close()


def _ended(writer: ssh.Stream) -> str:
    """What an unpacker that stopped taking data wrote to stderr, if it has ended."""
    try:
        code, err = writer.finish(5)
    except HostError:
        return ""
    return err if code != 0 else ""
