"""Root filesystems that base images are made of, built from Debian's packages on the portal's
machine without any image registry: for `FROM scratch` recipes, Debian's static busybox
(seconds) or a debootstrap minbase with python3 (about a minute, then cached); for
`FROM debian:<release>` recipes, the release with the recipe's packages (debian_tar)."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from apps.images import reproducible

BUSYBOX = "/bin/busybox"
# The root filesystems a recipe may ADD, by name.
NAMES = ("busybox", "debian-python")


def busybox_tar(cache: Path) -> Path:
    """A rootfs with Debian's static busybox and a symlink per applet (seconds to build)."""
    out = cache / "busybox-rootfs.tar"
    if out.exists():
        return out
    if not _is_static(BUSYBOX):
        raise RuntimeError(f"{BUSYBOX} is missing or not static: install Debian's busybox-static")
    cache.mkdir(parents=True, exist_ok=True)
    applets = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True, text=True).stdout.split()
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        for directory in ("bin", "etc", "tmp", "proc", "sys", "dev", "var", "srv", "root"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox":
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        for name, text in (
            ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
            ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    tmp.rename(out)
    return out


def _is_static(path: str) -> bool:
    """True for a 64-bit little-endian ELF executable without a PT_INTERP (no dynamic loader)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return False
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return False
    phoff = int.from_bytes(data[0x20:0x28], "little")
    phentsize = int.from_bytes(data[0x36:0x38], "little")
    phnum = int.from_bytes(data[0x38:0x3A], "little")
    pt_interp = 3
    return all(
        int.from_bytes(data[phoff + i * phentsize : phoff + i * phentsize + 4], "little") != pt_interp
        for i in range(phnum)
    )


def apt_mirror() -> str:
    """The Debian mirror this machine's apt already uses (read, never hard-coded)."""
    candidates: list[str] = []
    sources_d = Path("/etc/apt/sources.list.d")
    for path in sorted(sources_d.glob("*.sources")) if sources_d.exists() else []:
        block_uri = None
        for line in [*path.read_text().splitlines(), ""]:
            if line.startswith("URIs:"):
                block_uri = line.split(":", 1)[1].split()[0]
            elif line.startswith("Suites:") and block_uri and "bookworm" in line.split():
                candidates.append(block_uri)
            elif not line.strip():
                block_uri = None
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            match = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line)
            if match:
                candidates.append(match.group(1))
    for uri in candidates:
        if "security" not in uri:
            return uri
    raise RuntimeError("no Debian bookworm mirror found in /etc/apt sources; debootstrap needs one")


def debian_python_tar(cache: Path, log: Callable[[str], None]) -> Path:
    """debootstrap bookworm minbase + python3, built once and cached outside git (~40 s)."""
    return debootstrap_tar(
        cache / "debian-python-bookworm.tar",
        cache / ".debian-python.lock",
        ["python3"],
        "slipway/debian-python rootfs",
        log,
    )


def debootstrap_tar(
    out: Path,
    lock_path: Path,
    include: list[str],
    what: str,
    log: Callable[[str], None],
    drop: list[str] | None = None,
) -> Path:
    if out.exists():
        return out
    cache = out.parent
    cache.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two lab runs must not debootstrap into one place
        if out.exists():
            return out
        if not shutil.which("debootstrap"):
            raise RuntimeError("debootstrap is not installed: apt-get install debootstrap")
        log(f"building {what} with debootstrap (about a minute, once)")
        root = Path(tempfile.mkdtemp(prefix=f"{out.stem}-", dir=cache))
        try:
            subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(include)}",
                    "bookworm",
                    str(root),
                    apt_mirror(),
                ],
                check=True,
                capture_output=True,
            )
            # The apt lists and caches are large and useless inside a base image.
            for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for child in (root / sub).glob("*"):
                    if child.is_file():
                        child.unlink()
            for pattern in drop or []:
                for child in root.glob(pattern):
                    child.unlink()
            tmp = out.with_suffix(".tmp")
            subprocess.run(["tar", "-C", str(root), "-cf", str(tmp), "."], check=True)
            tmp.rename(out)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(
                f"debootstrap failed: {exc.stderr.decode(errors='replace')[-2000:] if exc.stderr else exc}"
            ) from exc
        finally:
            subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)
    os.sync()
    return out


def rootfs_tar(key: str, cache: Path, log: Callable[[str], None]) -> Path:
    if key == "busybox":
        return busybox_tar(cache)
    if key == "debian-python":
        return debian_python_tar(cache, log)
    raise KeyError(f"unknown root filesystem {key!r}; known: {list(NAMES)}")


# A Debian root filesystem is made with mmdebstrap: apt resolves the packages (so a dependency
# problem is apt's own message), and with SOURCE_DATE_EPOCH fixed the same packages give the same
# bytes (reproducible.py fixes what package scripts stamp with the clock).
MMDEBSTRAP = "mmdebstrap"
SOURCE_DATE_EPOCH = 0
# Bumped when the way a tree is made changes, so a cached tree made the old way is not reused.
BUILDER = "mmdebstrap-minbase-2"
# The steps a build goes through, as mmdebstrap reports them, in words for the Base images page.
STEPS = (
    ("running apt-get update", "reading the package lists"),
    ("downloading packages", "downloading packages"),
    ("extracting archives", "unpacking the essential packages"),
    ("installing essential packages", "installing the essential packages"),
    ("installing remaining packages", "installing the recipe's packages"),
    ("running --customize-hook", "making the tree reproducible"),
    ("creating tarball", "packing the root filesystem"),
)


class Cancelled(Exception):
    """The build was stopped because it was cancelled."""


class BuildFailed(RuntimeError):
    """mmdebstrap failed; the message is its last lines."""


def debian_key(deb_lines: list[str], packages: tuple[str, ...]) -> str:
    """What a Debian tree is made of, as a name: the same sources and packages, the same tree."""
    inputs = {"builder": BUILDER, "sources": sorted(deb_lines), "packages": sorted(packages)}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]


def debian_tar(
    release: str,
    deb_lines: list[str],
    packages: tuple[str, ...],
    cache: Path,
    log: Callable[[str], None],
    cancelled: Callable[[], bool] = lambda: False,
    *,
    reuse: bool = True,
) -> Path:
    """The root filesystem of `release` with `packages` (and what they depend on), built once
    per set of inputs and kept in `cache`. `log` gets every line of the build as it comes;
    `cancelled` is asked twice a second and stops the build (Cancelled) when it says so."""
    out = cache / f"debian-{release}-{debian_key(deb_lines, packages)}.tar"
    if reuse and out.exists():
        log(f"reusing the root filesystem built before from the same packages ({out.name})")
        return out
    if not shutil.which(MMDEBSTRAP):
        raise RuntimeError(f"{MMDEBSTRAP} is not installed on the worker: apt-get install mmdebstrap")
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{out.stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build of the same tree at a time
        if reuse and out.exists():
            return out
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        hook = f'{sys.executable} {reproducible.__file__} "$1"'
        argv = [
            MMDEBSTRAP,
            "--verbose",
            "--variant=minbase",
            "--mode=auto",
            "--format=tar",
            f"--include={','.join(packages)}" if packages else "--include=ca-certificates",
            '--aptopt=Acquire::Languages "none"',
            # A tree packed into a tar at the end needs no fsync per file; it only slows every
            # other process on the worker's disk.
            "--dpkgopt=force-unsafe-io",
            # Documentation and translations are large and nothing in a container reads them;
            # the copyright files stay (licences travel with the software).
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            # Some packages' scripts link their manual pages with update-alternatives.
            '--essential-hook=mkdir -p "$1/usr/share/man/man1"',
            f"--customize-hook={hook}",
            release,
            str(tmp),
            *deb_lines,
        ]
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH), "LC_ALL": "C.UTF-8"}
        try:
            tail = _run_logged(argv, env, log, cancelled)
            if tail is not None:
                raise BuildFailed("\n".join(tail))
            tmp.rename(out)
        finally:
            tmp.unlink(missing_ok=True)
    return out


def _run_logged(
    argv: list[str], env: dict[str, str], log: Callable[[str], None], cancelled: Callable[[], bool]
) -> list[str] | None:
    """Run `argv` in its own process group, passing each output line to `log`; None when it
    succeeded, else its last lines. Cancelled (after stopping the whole group) when asked."""
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # so a cancel stops apt and dpkg under it too
    )
    assert process.stdout is not None
    tail: list[str] = []
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            if cancelled():
                _stop(process)
                raise Cancelled()
            if not selector.select(timeout=0.5):
                continue
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").rstrip("\r")
                tail = [*tail[-59:], line]
                log(line)
    if buffer:
        tail.append(buffer.decode(errors="replace"))
        log(tail[-1])
    return None if process.wait() == 0 else tail


def _stop(process: subprocess.Popen[bytes]) -> None:
    """TERM the build's process group (mmdebstrap then unmounts and removes its temporary
    tree), KILL it if it has not ended in 20 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def step_of(line: str) -> str | None:
    """The build step a line of mmdebstrap's output starts, in words, or None."""
    if line.startswith("I: "):
        for marker, words in STEPS:
            if marker in line:
                return words
    return None
