"""`hostagent limits ID...`: the memory and CPU limits the kernel enforces on containers, read
from their cgroup files (found from each container's init pid, as `stats` does).

After a live resize the portal trusts these, not Docker's reply to the update."""

from __future__ import annotations

import contextlib

from hostagent import docker_socket, stats

UNLIMITED = 1 << 60  # v1 reports "no limit" as a huge number


def _number(text: str) -> int | None:
    text = text.strip()
    if text == "max":
        return None
    value = int(text)
    return None if value >= UNLIMITED else value


def _v1(paths: dict[str, str], mounts: stats.CgroupMounts) -> dict[str, object]:
    def file(controller: str, name: str) -> str | None:
        mount, path = mounts.v1.get(controller), paths.get(controller)
        where = stats._under(mount, path) if mount and path is not None else None
        return f"{where}/{name}" if where else None

    out: dict[str, object] = {}
    memory = file("memory", "memory.limit_in_bytes")
    if memory:
        out["memory_bytes"] = _number(stats._read(memory).decode())
    memsw = file("memory", "memory.memsw.limit_in_bytes")
    if memsw:
        with contextlib.suppress(OSError):  # no swap accounting on this kernel
            out["memory_swap_bytes"] = _number(stats._read(memsw).decode())
    quota, period = file("cpu", "cpu.cfs_quota_us"), file("cpu", "cpu.cfs_period_us")
    if quota and period:
        q, p = int(stats._read(quota)), int(stats._read(period))
        out["cpu_quota_us"], out["cpu_period_us"] = (None if q < 0 else q), p
    return out


def _v2(path: str, mounts: stats.CgroupMounts) -> dict[str, object]:
    assert mounts.v2 is not None
    where = stats._under(mounts.v2, path)
    if where is None:
        raise OSError("its cgroup is not visible to the agent")
    quota, period = stats._read(f"{where}/cpu.max").decode().split()
    out: dict[str, object] = {
        "memory_bytes": _number(stats._read(f"{where}/memory.max").decode()),
        "cpu_quota_us": None if quota == "max" else int(quota),
        "cpu_period_us": int(period),
    }
    try:
        swap = _number(stats._read(f"{where}/memory.swap.max").decode())
        memory = out["memory_bytes"]
        # v2 counts swap apart from memory; report it the v1 way (memory plus swap).
        out["memory_swap_bytes"] = None if swap is None or memory is None else int(str(memory)) + swap
    except OSError:
        pass
    return out


def collect(containers: list[str]) -> dict[str, object]:
    mounts = stats.cgroup_mounts(refresh=True)
    found: dict[str, object] = {}
    for name in containers:
        try:
            details = docker_socket.get_json(f"/containers/{name}/json")
            pid = int((details.get("State") or {}).get("Pid") or 0)
            if pid <= 0:
                raise OSError("not running")
            v1_paths, v2_path = stats.parse_proc_cgroup(stats._read(f"{stats.PROC_ROOT}/{pid}/cgroup"))
            figures = _v1(v1_paths, mounts) if mounts.version == 1 else _v2(v2_path or "", mounts)
            found[name] = {"id": details.get("Id"), "pid": pid, **figures}
        except (OSError, ValueError) as exc:
            found[name] = {"error": str(exc)}
    return {"cgroup_version": mounts.version, "containers": found}
