"""LXCFS on the host: what it offers containers, and healing containers after it restarts.

LXCFS is a FUSE filesystem whose /proc files (meminfo, cpuinfo, ...) answer with the limits of
the reading process's cgroup, so `free` in a container shows the container's memory. Instances
get those files as read-only bind mounts. A bind mount holds the FUSE connection it was made
from: after LXCFS restarts, every container created before still reads the dead one, and its
/proc/meminfo fails with ENOTCONN. `heal` puts a bind of the live mount in place of each stale
one inside the running container, which keeps running.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import subprocess
import time
from typing import Any, NamedTuple

from hostagent import docker_socket, services

ROOT_ENV = "SLIPWAY_LXCFS_ROOT"
DEFAULT_ROOT = "/var/lib/lxcfs"
FSTYPE = "fuse.lxcfs"
# What an instance gets, relative to the LXCFS root and to the container's /. LXCFS also offers
# proc/slabinfo (needs privileges to mean anything) and cgroup/ (not for containers).
FILES = (
    "proc/meminfo",
    "proc/cpuinfo",
    "proc/stat",
    "proc/uptime",
    "proc/loadavg",
    "proc/diskstats",
    "proc/swaps",
    "sys/devices/system/cpu/online",
)

# Mount API syscalls (Linux >= 5.2; mount_setattr >= 5.12). Their numbers are the same on every
# architecture since 5.1's common numbering, except alpha, ia64 and mips.
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
CLONE_NEWNS = 0x00020000


class Mount(NamedTuple):
    mount_point: str
    fstype: str
    source: str


def default_root() -> str:
    return os.environ.get(ROOT_ENV) or DEFAULT_ROOT


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        fields, sep, rest = line.partition(" - ")
        parts, tail = fields.split(), rest.split()
        if not sep or len(parts) < 5 or len(tail) < 2:
            continue
        mounts.append(Mount(_unescape(parts[4]), tail[0], _unescape(tail[1])))
    return mounts


def mount_point(root: str, mountinfo: str | None = None) -> str:
    """`root` (resolved) if an LXCFS is mounted there, else ""; a dead one still counts."""
    if mountinfo is None:
        with open("/proc/self/mountinfo") as handle:
            mountinfo = handle.read()
    target = os.path.realpath(root)
    for mount in parse_mountinfo(mountinfo):
        if mount.mount_point == target and mount.fstype == FSTYPE:
            return target
    return ""


def _probe(path: str, read: bool = True) -> int:
    """0 if the file opens (and reads), else the errno (ENOTCONN: its FUSE connection is dead).
    Opening alone asks the FUSE daemon already; reading makes LXCFS compute the file."""
    try:
        with open(path, "rb") as handle:
            if read:
                handle.read(1)
    except OSError as exc:
        return exc.errno or errno.EIO
    return 0


def binds(root: str, mountinfo: str | None = None) -> list[tuple[str, str]]:
    """(host path, container path) of each file this host's LXCFS offers, for read-only binds."""
    if not mount_point(root, mountinfo):
        return []
    return [(os.path.join(root, rel), "/" + rel) for rel in FILES if _probe(os.path.join(root, rel)) == 0]


def facts(root: str | None = None) -> dict[str, Any]:
    root = root or default_root()
    probes = {"/" + rel: _probe(os.path.join(root, rel)) for rel in FILES}
    mount = mount_point(root)
    try:
        stale, stale_error = [_public(c) for c in stale_containers(root)], ""
    except (OSError, ValueError) as exc:
        stale, stale_error = [], str(exc)
    return {
        "root": root,
        "mount": mount,
        "running": bool(mount) and probes["/proc/meminfo"] == 0,
        "files": [path for path, err in probes.items() if err == 0],
        "broken": [path for path, err in probes.items() if err == errno.ENOTCONN],
        "binds": [[os.path.join(root, path[1:]), path] for path, err in probes.items() if not err and mount],
        # Running containers whose LXCFS binds are stale (made before LXCFS restarted).
        "stale": stale,
        "stale_error": stale_error,
    }


def _public(container: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": container["id"],
        "name": container["name"],
        "files": [m["dest"] for m in container["mounts"]],
    }


def _under(path: str, root: str) -> bool:
    return os.path.normpath(path).startswith(os.path.normpath(root).rstrip("/") + "/")


def stale_containers(root: str) -> list[dict[str, Any]]:
    """Running containers with a bind from under `root` that fails with ENOTCONN inside them."""
    out = []
    for summary in docker_socket.get_json("/containers/json"):
        mounts = [
            m
            for m in summary.get("Mounts") or []
            if m.get("Type") == "bind" and _under(m.get("Source", ""), root)
        ]
        if not mounts:
            continue
        state = docker_socket.get_json(f"/containers/{summary['Id']}/json")["State"]
        pid = int(state.get("Pid") or 0)
        if not state.get("Running") or pid <= 0:
            continue
        broken = [
            {"source": m["Source"], "dest": m["Destination"], "readonly": not m.get("RW", True)}
            for m in mounts
            # Through /proc/PID/root: the file as the container sees it, through its own mounts.
            if _probe(f"/proc/{pid}/root{m['Destination']}", read=False) == errno.ENOTCONN
        ]
        if broken:
            name = (summary.get("Names") or ["/" + summary["Id"][:12]])[0].lstrip("/")
            out.append({"id": summary["Id"], "name": name, "pid": pid, "mounts": broken})
    return out


def heal(root: str | None = None) -> dict[str, Any]:
    """Re-bind every stale LXCFS file in running containers from the live mount; no restarts."""
    root = root or default_root()
    if not mount_point(root) or _probe(os.path.join(root, "proc/meminfo")) != 0:
        raise OSError(f"LXCFS is not mounted and answering at {root}; start it first")
    containers = []
    for container in stale_containers(root):
        healed: list[str] = []
        failed: dict[str, str] = {}
        for mount in container["mounts"]:
            try:
                rebind(container["pid"], mount["source"], mount["dest"], readonly=mount["readonly"])
            except OSError as exc:
                failed[mount["dest"]] = str(exc)
                continue
            # Checked from outside, as the stale one was found.
            err = _probe(f"/proc/{container['pid']}/root{mount['dest']}")
            if err:
                failed[mount["dest"]] = f"still failing after the re-bind: {os.strerror(err)}"
            else:
                healed.append(mount["dest"])
        containers.append(
            {"id": container["id"], "name": container["name"], "healed": healed, "failed": failed}
        )
    return {"root": root, "containers": containers}


# --- the mount API through ctypes --------------------------------------------------------------


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def rebind(pid: int, source: str, dest: str, readonly: bool = True) -> None:
    """Replace the mount on `dest` in the mount namespace of process `pid` by a bind of `source`
    (a path in this process's namespace)."""
    tree = _check(
        _libc.syscall(
            ctypes.c_long(SYS_OPEN_TREE),
            ctypes.c_int(AT_FDCWD),
            ctypes.c_char_p(source.encode()),
            ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC),
        ),
        f"open_tree {source}",
    )
    try:
        # Private: the copy must not stay tied to the peer group of the host's LXCFS mount.
        attr = _MountAttr(MOUNT_ATTR_RDONLY if readonly else 0, 0, MS_PRIVATE, 0)
        result = _libc.syscall(
            ctypes.c_long(SYS_MOUNT_SETATTR),
            ctypes.c_int(tree),
            ctypes.c_char_p(b""),
            ctypes.c_uint(AT_EMPTY_PATH),
            ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)),
        )
        if result < 0 and ctypes.get_errno() != errno.ENOSYS:  # before 5.12: LXCFS refuses writes anyway
            _check(result, f"mount_setattr {source}")
        namespace = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _in_namespace(namespace, tree, dest)
        finally:
            os.close(namespace)
    finally:
        os.close(tree)


def _in_namespace(namespace: int, tree: int, dest: str) -> None:
    # setns into a mount namespace is refused to a multithreaded process, and it moves the
    # caller's root and cwd: a forked child does it and exits.
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_end)
            _check(_libc.setns(ctypes.c_int(namespace), ctypes.c_int(CLONE_NEWNS)), "setns")
            target = ctypes.c_char_p(dest.encode())
            _check(_libc.umount2(target, ctypes.c_int(MNT_DETACH)), f"umount {dest}")
            _check(
                _libc.syscall(
                    ctypes.c_long(SYS_MOVE_MOUNT),
                    ctypes.c_int(tree),
                    ctypes.c_char_p(b""),
                    ctypes.c_int(AT_FDCWD),
                    target,
                    ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH),
                ),
                f"move_mount onto {dest} (the container now sees its own {dest})",
            )
            code = 0
        except BaseException as exc:
            os.write(write_end, str(exc).encode())
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode(errors="replace")
    _, status = os.waitpid(child, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError(message or f"re-bind of {dest} failed (status {status})")


# --- starting it -----------------------------------------------------------------------------

START_WAIT_S = 20.0
INSTALL_TIMEOUT_S = 600.0


def start(root: str | None = None) -> dict[str, Any]:
    """Have LXCFS serve `root`: install Debian's package if the host has none, enable and
    (re)start the service, wait until it answers, then heal the containers it restarted under."""
    root = root or default_root()
    done: list[str] = []
    now = facts(root)
    if not now["running"] or now["broken"]:
        if shutil.which("lxcfs") is None:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            try:
                installed = subprocess.run(
                    ["apt-get", "install", "-y", "--no-install-recommends", "lxcfs"],
                    capture_output=True,
                    text=True,
                    timeout=INSTALL_TIMEOUT_S,
                    env=env,
                    stdin=subprocess.DEVNULL,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise OSError(f"apt-get install lxcfs failed: {exc}") from None
            if installed.returncode != 0:
                said = (installed.stderr.strip() or "no output").splitlines()[-1]
                raise OSError(f"apt-get install lxcfs exited {installed.returncode}: {said}")
            done.append("installed Debian's lxcfs package")
        services.ctl("enable", "lxcfs", timeout=60)
        services.ctl("restart", "lxcfs", timeout=60)
        deadline = time.monotonic() + START_WAIT_S
        while True:
            now = facts(root)
            if now["running"] and not now["broken"]:
                break
            if time.monotonic() > deadline:
                raise OSError(
                    f"lxcfs was started but does not serve {root} after {START_WAIT_S:.0f} s; "
                    "see `journalctl -u lxcfs`"
                )
            time.sleep(0.2)
        done.append(f"started lxcfs, serving {root}")
    else:
        done.append(f"lxcfs serves {root} already")
    healed = heal(root)["containers"] if now["stale"] else []
    if healed:
        done.append(f"re-bound its files in {len(healed)} running containers")
    return {"root": root, "done": done, "healed": healed, "after": facts(root)}
