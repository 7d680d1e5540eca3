"""Processes, network namespaces and mounts on this machine, for the lab's hosts and its
legacy VMs alike. Everything is found by pidfile, by namespace and by parentage, never by
process name."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

NETNS_DIR = Path("/var/run/netns")


class LabError(Exception):
    pass


def mac(seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])


def sh(
    *argv: str, check: bool = True, netns: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    command = list(argv)
    if netns:
        # nsenter, not `ip netns exec`: the latter remounts /sys, and dockerd then fails
        # with "Devices cgroup isn't mounted".
        command = ["nsenter", f"--net={NETNS_DIR / netns}", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise LabError(
            f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
        )
    return result


def link_exists(name: str, netns: str | None = None) -> bool:
    return sh("ip", "link", "show", name, check=False, netns=netns).returncode == 0


def ns_inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pid_from(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def daemon_pid(pidfile: Path, marker: str, netns_path: Path) -> int | None:
    """The pid in the pidfile if it is our daemon (its argv names `marker`) in our namespace."""
    pid = pid_from(pidfile)
    if pid is None or not any(marker in part for part in cmdline(pid)):
        return None
    if ns_inode(Path(f"/proc/{pid}/ns/net")) != ns_inode(netns_path):
        return None
    return pid


def terminate(pid: int, grace: float = 15.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def processes_in_netns(netns_path: Path) -> list[int]:
    inode = ns_inode(netns_path)
    if inode is None:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and ns_inode(entry / "ns" / "net") == inode:
            found.append(int(entry.name))
    return found


def descendants(roots: list[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    stack = list(roots)
    while stack:
        pid = stack.pop()
        for child in children.get(pid, []):
            out.append(child)
            stack.append(child)
    return out


def mount_types(target: Path, pid: int | str = "self") -> list[str]:
    """Filesystem types mounted on `target` in the mount namespace of process `pid`."""
    try:
        lines = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields, _, rest = line.partition(" - ")
        point = fields.split()[4].replace("\\040", " ")
        if point == str(target):
            found.append(rest.split()[0])
    return found


def unmount_under(*roots: Path) -> None:
    prefixes = [str(root).rstrip("/") + "/" for root in roots]
    mounts = []
    for line in Path("/proc/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if any(target.startswith(prefix) or target + "/" == prefix for prefix in prefixes):
            mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)


def wait_for(check: Callable[[], bool], timeout: float, what: str, log_file: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    tail = ""
    if log_file and log_file.exists():
        tail = "\n" + "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
    raise LabError(f"{what} did not come up within {timeout:g} s{tail}")


def sshd_answers(address: str, port: int = 22) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2) as conn:
            conn.settimeout(2)
            return conn.recv(64).startswith(b"SSH-")
    except OSError:
        return False
