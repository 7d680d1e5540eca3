"""Root filesystems that base image recipes ADD, built from Debian's packages on the portal's
machine without any image registry: Debian's static busybox (seconds), or a debootstrap
minbase with extra packages (about a minute, then cached)."""

from __future__ import annotations

import fcntl
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

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
