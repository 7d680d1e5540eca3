"""`hostagent stats`: one sweep of the kernel's cgroup counters for every running container.

Docker's own stats endpoint costs an API round trip per container (and a second of sampling for
the CPU figures); the agent reads the same counters from the cgroup files directly. The portal
keeps `hostagent serve` running, so what a sweep learns about a container is kept in `_TARGETS`
for the next one: its init pid and its cgroup files, held open (a read at offset 0 makes the
kernel render the file afresh, and costs a tenth of an open, read and close). A steady-state
sweep is one Docker list call and about a dozen pread(2) calls per container. A container is
inspected again only when it is new or its init process no longer sits in the same cgroups.

Where the cgroup files live comes from the kernel, never from a naming convention: the
container's /proc/PID/cgroup gives its path in each hierarchy, /proc/self/mountinfo where this
process sees each hierarchy mounted. Daemons started with --cgroup-parent (the lab's are) or by
systemd put containers in very different places.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import resource
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from hostagent import docker_socket
from hostagent.protocol import AGENT_VERSION, ContainerStats, StatsDocument

# Injectable for tests: a captured tree stands in for the host's.
PROC_ROOT = "/proc"
MOUNTINFO = "/proc/self/mountinfo"

LABEL_PREFIX = "io.slipway."
# cgroup v1 reports "no limit" as the largest page count in bytes (0x7FFFFFFFFFFFF000 on 64-bit);
# nothing real comes near 2**60.
UNLIMITED_V1 = 1 << 60
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "blkio")
_READ_SIZE = 65536
# Descriptors held open across sweeps, at most this share of RLIMIT_NOFILE; past it, a
# container's files are opened at each sweep instead (slower, never wrong).
_FD_SHARE = 0.5
_FD_CEILING = 1 << 16


@dataclass(frozen=True)
class Mount:
    point: str  # where this process sees the hierarchy
    root: str  # which cgroup of the hierarchy is mounted there ("/" but for bind mounts)


@dataclass(frozen=True)
class CgroupMounts:
    v1: dict[str, Mount]  # controller -> its hierarchy's mount
    v2: Mount | None

    @property
    def version(self) -> int:
        # Hybrid hosts mount an empty cgroup2 beside the v1 controllers; the controllers decide.
        return 1 if self.v1 else 2


def _read(path: str) -> bytes:
    # os.open/os.read: no buffered text layer; these files come whole in one read.
    fd = os.open(path, os.O_RDONLY)
    try:
        return _pread(fd)
    finally:
        os.close(fd)


def _pread(fd: int) -> bytes:
    data = os.pread(fd, _READ_SIZE, 0)
    if len(data) == _READ_SIZE:
        chunks = [data]
        while chunk := os.pread(fd, _READ_SIZE, _READ_SIZE * len(chunks)):
            chunks.append(chunk)
        data = b"".join(chunks)
    return data


_fd_budget: int | None = None
_fds_held = 0


def _budget() -> int:
    """How many descriptors the targets may hold; raises the soft limit to the hard one first
    (the agent polls its sockets, it never calls select(2), so high descriptors are fine)."""
    global _fd_budget
    if _fd_budget is None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = _FD_CEILING if hard == resource.RLIM_INFINITY else min(hard, _FD_CEILING)
        if soft != resource.RLIM_INFINITY and soft < want:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
                soft = want
        _fd_budget = int(min(soft, _FD_CEILING) * _FD_SHARE)
    return _fd_budget


@dataclass
class Target:
    """One container start: its init process and the files a sweep reads for it."""

    pid: int
    cgroup: bytes  # /proc/PID/cgroup as resolved: a restart or a moved process changes it
    version: int
    files: dict[str, str]  # figure group -> file, "cgroup" included; what the host lacks is left out
    net: str | None  # /proc/PID/net/dev; None when the container shares the host's network
    fds: dict[str, int] = field(default_factory=dict)

    def hold(self) -> None:
        """Open the files for the sweeps to come, within the descriptor budget. The network
        file is not held: an open /proc/PID/net/dev pins the container's network namespace,
        which would outlive the container until the next sweep."""
        global _fds_held
        if self.fds or _fds_held + len(self.files) > _budget():
            return
        try:
            for group, path in self.files.items():
                self.fds[group] = os.open(path, os.O_RDONLY)
                _fds_held += 1
        except OSError:
            self.close()
            raise

    def read(self, group: str) -> bytes:
        fd = self.fds.get(group)
        return _read(self.files[group]) if fd is None else _pread(fd)

    def still_valid(self) -> bool:
        # A held /proc/PID/cgroup belongs to that very process: once it exits, reads fail
        # (ESRCH) even if the pid number is reused.
        try:
            return self.read("cgroup") == self.cgroup
        except OSError:
            return False

    def close(self) -> None:
        global _fds_held
        for fd in self.fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
            _fds_held -= 1
        self.fds.clear()


_TARGETS: dict[str, Target] = {}
_mounts: CgroupMounts | None = None
_last_listed: dict[str | None, list[str]] = {}  # label filter -> ids the last sweep read
_lister: concurrent.futures.ThreadPoolExecutor | None = None
# label filter -> (when listed, the cgroup siblings then, the Docker list): a sweep asks
# dockerd again only when containers came or went, or the list is older than LIST_MAX_AGE
# (names and labels; dockerd takes over 100 us per container to list them).
_listings: dict[str | None, tuple[float, frozenset[str] | None, list[Any]]] = {}
LIST_MAX_AGE = 30.0


# --- parsing ---------------------------------------------------------------------------------------


def parse_flat(data: bytes) -> dict[bytes, int]:
    """Lines of a key and a number (cpu.stat, memory.stat, memory.events, memory.oom_control)."""
    words = iter(data.split())
    return dict(zip(words, map(int, words), strict=False))


def parse_blkio_v1(data: bytes) -> tuple[int, int]:
    """blkio.throttle.io_service_bytes: "MAJ:MIN Read N" etc. per device, then "Total N"."""
    read = write = 0
    for line in data.splitlines():
        fields = line.split()
        if len(fields) == 3:
            if fields[1] == b"Read":
                read += int(fields[2])
            elif fields[1] == b"Write":
                write += int(fields[2])
    return read, write


def parse_io_v2(data: bytes) -> tuple[int, int]:
    """io.stat: "MAJ:MIN rbytes=N wbytes=N rios=N ..." per device."""
    read = write = 0
    for line in data.splitlines():
        for pair in line.split()[1:]:
            key, _, value = pair.partition(b"=")
            if key == b"rbytes":
                read += int(value)
            elif key == b"wbytes":
                write += int(value)
    return read, write


def parse_net_dev(data: bytes) -> tuple[int, int]:
    """/proc/PID/net/dev, summed over the interfaces but loopback."""
    rx = tx = 0
    for line in data.splitlines()[2:]:
        name, _, counters = line.partition(b":")
        if name.strip() == b"lo":
            continue
        fields = counters.split()
        rx += int(fields[0])
        tx += int(fields[8])
    return rx, tx


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    if "\\" not in field:
        return field
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def parse_mountinfo(text: str) -> CgroupMounts:
    v1: dict[str, Mount] = {}
    v2: Mount | None = None
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        if not sep:
            continue
        fstype, _, rest = tail.partition(" ")
        if fstype not in ("cgroup", "cgroup2"):
            continue
        fields = head.split(" ")
        mount = Mount(point=_unescape(fields[4]), root=_unescape(fields[3]))
        if fstype == "cgroup2":
            if v2 is None or (mount.root == "/" and v2.root != "/"):
                v2 = mount
            continue
        options = rest.partition(" ")[2].split(",")
        for controller in V1_CONTROLLERS:
            if controller in options:
                known = v1.get(controller)
                # The same hierarchy may be mounted again (bind mounts of a subtree): prefer
                # the mount of the whole hierarchy.
                if known is None or (mount.root == "/" and known.root != "/"):
                    v1[controller] = mount
    return CgroupMounts(v1=v1, v2=v2)


def parse_proc_cgroup(data: bytes) -> tuple[dict[str, str], str | None]:
    """/proc/PID/cgroup: "N:controllers:/path" per v1 hierarchy, "0::/path" for v2."""
    v1: dict[str, str] = {}
    v2: str | None = None
    for line in data.decode().splitlines():
        number, controllers, path = line.split(":", 2)
        if number == "0" and not controllers:
            v2 = path
        else:
            for controller in controllers.split(","):
                v1[controller] = path
    return v1, v2


def _under(mount: Mount, path: str) -> str | None:
    """The directory of cgroup `path` through `mount`; None if the mount does not show it."""
    root = mount.root.rstrip("/")
    if root:
        if path != root and not path.startswith(root + "/"):
            return None
        path = path[len(root) :]
    return mount.point.rstrip("/") + path


# Figure group -> (controller, file); v1 and v2.
V1_FILES = {
    "cpuacct": ("cpuacct", "cpuacct.usage"),
    "cpu": ("cpu", "cpu.stat"),
    "usage": ("memory", "memory.usage_in_bytes"),
    "limit": ("memory", "memory.limit_in_bytes"),
    "mstat": ("memory", "memory.stat"),
    "memsw": ("memory", "memory.memsw.usage_in_bytes"),
    "failcnt": ("memory", "memory.failcnt"),
    "oom": ("memory", "memory.oom_control"),
    "pids": ("pids", "pids.current"),
    "io": ("blkio", "blkio.throttle.io_service_bytes"),
}
V2_FILES = {
    "cpu": "cpu.stat",
    "usage": "memory.current",
    "limit": "memory.max",
    "mstat": "memory.stat",
    "swap": "memory.swap.current",
    "events": "memory.events",
    "pids": "pids.current",
    "io": "io.stat",
}


def resolve(
    pid: int, mounts: CgroupMounts, proc_root: str | None = None, host_network: bool = False
) -> Target:
    """The files a sweep reads for the container whose init process is `pid`."""
    proc = PROC_ROOT if proc_root is None else proc_root
    cgroup = _read(f"{proc}/{pid}/cgroup")
    v1_paths, v2_path = parse_proc_cgroup(cgroup)
    files: dict[str, str] = {}
    if mounts.version == 1:
        for group, (controller, name) in V1_FILES.items():
            mount, path = mounts.v1.get(controller), v1_paths.get(controller)
            where = _under(mount, path) if mount and path is not None else None
            if where is not None:
                files[group] = f"{where}/{name}"
    elif mounts.v2 is not None and v2_path is not None:
        where = _under(mounts.v2, v2_path)
        if where is not None:
            files = {group: f"{where}/{name}" for group, name in V2_FILES.items()}
    if not files:
        raise OSError(f"pid {pid}: no cgroup of it is visible to the agent")
    # A file the host does not have (no swap accounting, no pids controller) is left out for
    # good; one that vanishes later means the container went away.
    files = {group: path for group, path in files.items() if os.path.exists(path)}
    if "usage" not in files:
        raise OSError(f"pid {pid}: its memory cgroup has no usage file; did it just stop?")
    # memory.stat has a swap line whenever swap is accounted; memsw is only the fallback.
    if "memsw" in files and "mstat" in files and b"\nswap " in _read(files["mstat"]):
        del files["memsw"]
    files["cgroup"] = f"{proc}/{pid}/cgroup"
    return Target(
        pid=pid,
        cgroup=cgroup,
        version=mounts.version,
        files=files,
        net=None if host_network else f"{proc}/{pid}/net/dev",
    )


def read_figures(target: Target) -> ContainerStats:
    files = target.files
    out: ContainerStats = {"pid": target.pid}
    usage = int(target.read("usage"))
    mstat = parse_flat(target.read("mstat")) if "mstat" in files else {}
    inactive_file = mstat.get(b"total_inactive_file", mstat.get(b"inactive_file", 0))
    if target.version == 1:
        if "cpuacct" in files:
            out["cpu_usage_ns"] = int(target.read("cpuacct"))
        if "cpu" in files:
            cpu = parse_flat(target.read("cpu"))
            out["cpu_periods"] = cpu.get(b"nr_periods", 0)
            out["cpu_throttled_periods"] = cpu.get(b"nr_throttled", 0)
            out["cpu_throttled_ns"] = cpu.get(b"throttled_time", 0)
        limit = int(target.read("limit")) if "limit" in files else 0
        out["memory_limit"] = 0 if limit >= UNLIMITED_V1 else limit
        out["memory_rss"] = mstat.get(b"rss", 0)
        out["memory_cache"] = mstat.get(b"cache", 0)
        # memory.stat counts swap itself when swap is accounted; memsw is the older way to it.
        if b"swap" in mstat:
            out["memory_swap"] = mstat[b"swap"]
        elif "memsw" in files:
            out["memory_swap"] = max(0, int(target.read("memsw")) - usage)
        else:
            out["memory_swap"] = 0
        if "failcnt" in files:
            out["memory_failcnt"] = int(target.read("failcnt"))
        if "oom" in files:
            out["oom_kills"] = parse_flat(target.read("oom")).get(b"oom_kill", 0)
        if "io" in files:
            out["blkio_read_bytes"], out["blkio_write_bytes"] = parse_blkio_v1(target.read("io"))
    else:
        if "cpu" in files:
            cpu = parse_flat(target.read("cpu"))
            out["cpu_usage_ns"] = cpu.get(b"usage_usec", 0) * 1000
            out["cpu_periods"] = cpu.get(b"nr_periods", 0)
            out["cpu_throttled_periods"] = cpu.get(b"nr_throttled", 0)
            out["cpu_throttled_ns"] = cpu.get(b"throttled_usec", 0) * 1000
        if "limit" in files:
            max_text = target.read("limit").strip()
            out["memory_limit"] = 0 if max_text == b"max" else int(max_text)
        out["memory_rss"] = mstat.get(b"anon", 0)
        out["memory_cache"] = mstat.get(b"file", 0)
        out["memory_swap"] = int(target.read("swap")) if "swap" in files else 0
        if "events" in files:
            events = parse_flat(target.read("events"))
            out["memory_failcnt"] = events.get(b"max", 0)
            out["oom_kills"] = events.get(b"oom_kill", 0)
        if "io" in files:
            out["blkio_read_bytes"], out["blkio_write_bytes"] = parse_io_v2(target.read("io"))
    out["memory_usage"] = usage
    out["memory_working_set"] = max(0, usage - inactive_file)
    if "pids" in files:
        out["pids"] = int(target.read("pids"))
    if target.net is not None:
        out["net_rx_bytes"], out["net_tx_bytes"] = parse_net_dev(_read(target.net))
    return out


# --- the sweep -----------------------------------------------------------------------------------


def cgroup_mounts(refresh: bool = False) -> CgroupMounts:
    global _mounts
    if _mounts is None or refresh:
        with open(MOUNTINFO) as handle:
            _mounts = parse_mountinfo(handle.read())
    return _mounts


class _Sweep:
    def __init__(self) -> None:
        self.mounts_read = False

    def inspect(self, container_id: str, host_network: bool) -> Target:
        details = docker_socket.get_json(f"/containers/{container_id}/json")
        state = details.get("State") or {}
        pid = int(state.get("Pid") or 0)
        if not state.get("Running") or pid <= 0:
            raise OSError("not running any more")
        # The mount table is read again once in a sweep that inspects: cheap beside the API
        # call, and a long-lived agent follows a host whose cgroup mounts changed.
        mounts = cgroup_mounts(refresh=not self.mounts_read)
        self.mounts_read = True
        target = resolve(pid, mounts, host_network=host_network)
        target.hold()
        return target

    def one(self, listed: dict[str, Any], early: ContainerStats | None = None) -> ContainerStats:
        container_id = str(listed["Id"])
        entry: ContainerStats = {
            "id": container_id,
            "name": str((listed.get("Names") or ["/"])[0]).lstrip("/"),
            "labels": {
                k: str(v) for k, v in (listed.get("Labels") or {}).items() if k.startswith(LABEL_PREFIX)
            },
        }
        if early is not None:
            entry.update(early)
            return entry
        target = _TARGETS.get(container_id)
        try:
            if target is None or not target.still_valid():
                _forget(container_id)
                host_network = (listed.get("HostConfig") or {}).get("NetworkMode") == "host"
                target = _TARGETS[container_id] = self.inspect(container_id, host_network)
            entry.update(read_figures(target))
        except (OSError, ValueError) as exc:
            # Stopped between the list call and the reads: report it, keep sweeping.
            _forget(container_id)
            entry["error"] = f"container went away during the sweep: {exc}"
        return entry


def _forget(container_id: str) -> None:
    target = _TARGETS.pop(container_id, None)
    if target is not None:
        target.close()


def forget_all() -> None:
    """Close every held file (tests; an agent about to exit need not bother)."""
    for container_id in list(_TARGETS):
        _forget(container_id)
    _last_listed.clear()
    _listings.clear()


def _read_ahead(container_ids: list[str]) -> dict[str, ContainerStats]:
    """Figures of the containers the previous sweep listed, read while dockerd builds this
    sweep's list. A container that stopped or restarted is left for the sweep to sort out."""
    out: dict[str, ContainerStats] = {}
    for container_id in container_ids:
        target = _TARGETS.get(container_id)
        if target is not None and target.still_valid():
            with contextlib.suppress(OSError, ValueError):
                out[container_id] = read_figures(target)
    return out


def _siblings() -> frozenset[str] | None:
    """The cgroup directories beside the known containers' (their parents' children): cheap
    to list, and they change exactly when a container starts or stops under those parents."""
    parents = {
        os.path.dirname(os.path.dirname(target.files["usage"]))
        for target in _TARGETS.values()
        if "usage" in target.files
    }
    if not parents:
        return None
    names: set[str] = set()
    try:
        for parent in parents:
            with os.scandir(parent) as entries:
                names.update(f"{parent}/{e.name}" for e in entries if e.is_dir(follow_symlinks=False))
    except OSError:
        return None
    return frozenset(names)


def collect(label: str | None = None) -> StatsDocument:
    global _lister
    started = time.time()
    clock = time.perf_counter()
    path = "/containers/json"
    if label:
        path += "?filters=" + urllib.parse.quote(json.dumps({"label": [label]}))
    # dockerd takes longer to list containers (over 100 us each) than the agent takes to read
    # them: the list is asked for on a worker thread, and the reads overlap it.
    if _lister is None:
        _lister = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hostagent-stats")
    siblings = _siblings()
    cached = _listings.get(label)
    if (
        cached is not None
        and siblings is not None
        and cached[1] == siblings
        and clock - cached[0] < LIST_MAX_AGE
    ):
        # No container cgroup came or went beside the ones we know: the last list still holds
        # (a container that restarted in place is caught by its cgroup file; see Target).
        items, early, listed_now = cached[2], {}, False
    else:
        listing = _lister.submit(docker_socket.get_json, path)
        early = _read_ahead(_last_listed.get(label, []))
        items, listed_now = listing.result(), True
    sweep = _Sweep()
    containers = [sweep.one(item, early.get(str(item["Id"]))) for item in items]
    if listed_now:
        _listings[label] = (clock, _siblings(), items)
    listed = {c["id"] for c in containers}
    _last_listed.clear()
    _last_listed[label] = [c["id"] for c in containers if "error" not in c]
    # Forget containers that stopped. One left out by a label filter is kept while it runs:
    # the next sweep may ask without the filter.
    for container_id, target in list(_TARGETS.items()):
        if container_id not in listed and not target.still_valid():
            _forget(container_id)
    return {
        "agent_version": AGENT_VERSION,
        "time": started,
        "cgroup_version": cgroup_mounts().version,
        "sweep_ms": round((time.perf_counter() - clock) * 1000, 3),
        "containers": containers,
    }
