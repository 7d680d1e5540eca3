"""`hostagent kill-tree PID --container ID`: kill an exec'd process and everything it started,
after checking that it runs in that container (its /proc/PID/cgroup names the container id).

Docker's API has no way to stop an exec; this is how a command past its timeout ends."""

from __future__ import annotations

import os
import signal

from hostagent import stats


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for name in os.listdir(stats.PROC_ROOT):
        if not name.isdigit():
            continue
        try:
            with open(f"{stats.PROC_ROOT}/{name}/stat", "rb") as handle:
                # The command name (field 2) may hold spaces and parentheses: split after it.
                after = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        out.setdefault(int(after[1]), []).append(int(name))
    return out


def kill_tree(pid: int, container: str) -> dict[str, object]:
    if pid <= 1:
        raise ValueError(f"refusing to kill pid {pid}")
    if len(container) < 12:
        raise ValueError("give the container's id (at least 12 characters)")
    try:
        cgroup = stats._read(f"{stats.PROC_ROOT}/{pid}/cgroup").decode()
    except OSError:
        return {"pid": pid, "killed": [], "gone": True}
    if container not in cgroup:
        raise ValueError(f"pid {pid} is not in container {container[:12]}")
    tree, todo, children = [], [pid], _children()
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    killed = []
    for victim in tree:
        try:
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
        except ProcessLookupError:
            continue
    return {"pid": pid, "killed": killed, "gone": False}
