"""`hostagent doctor`: everything a host needs to take instances, each check with what is wrong
and the exact remedy, and (where the portal can apply it safely) the name of its fix.

Ops can run it by hand on a server (`python3 /opt/slipway/agent/current/hostagent.pyz doctor`);
the portal runs it on every probe and shows the list on the host's page. What only the portal
knows comes in as arguments: the Docker networks its IP pools need on this host (name:parent),
whether IP forwarding must be off, the volume root, and the portal's clock.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from hostagent import check, docker_socket, info, lxcfs

DOCKER_CONFIG_ENV = "SLIPWAY_DOCKER_CONFIG"  # where dockerd's daemon.json is (default below)
DOCKER_CONFIG = "/etc/docker/daemon.json"
MIN_DOCKER = (20, 10)
MIN_FREE_BYTES = 2 << 30
MIN_FREE_FRACTION = 0.10
MAX_CLOCK_SKEW = 2.0  # seconds; metrics and heartbeats compare the host's times with the portal's


def _check(
    name: str, ok: bool, detail: str, remedy: str = "", fix: str = "", *, required: bool = True
) -> dict[str, Any]:
    """One line of the report. `remedy` says what to do by hand; `fix` names what the portal can
    do for ops (network, fix-network, lxcfs, daemon-json); both only when the check fails. A host that
    fails a `required` check takes no new instances; the others are advice."""
    return {
        "name": name,
        "ok": ok,
        "detail": detail,
        "remedy": "" if ok else remedy,
        "fix": "" if ok else fix,
        "required": required,
    }


def docker_config_path() -> str:
    return os.environ.get(DOCKER_CONFIG_ENV) or DOCKER_CONFIG


def read_docker_config() -> dict[str, Any]:
    try:
        with open(docker_config_path()) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _swap_accounting(version: int, root: str = info.CGROUP_ROOT) -> bool:
    """Whether memory+swap can be limited: what a live resize sets along with memory."""
    if version == 1:
        return os.path.exists(os.path.join(root, "memory", "memory.memsw.limit_in_bytes"))
    # v2 has the swap files in every cgroup below the root (not in the root) when accounting
    # is on: look two levels down, where system.slice and Docker's scopes are.
    wanted = ("memory.swap.max", "memory.swap.current")
    for first in _children(root):
        for path in (first, *_children(first)):
            if any(os.path.exists(os.path.join(path, name)) for name in wanted):
                return True
    return False


def _children(path: str) -> list[str]:
    try:
        return [entry.path for entry in os.scandir(path) if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _networks(wanted: list[str]) -> list[dict[str, Any]]:
    out = []
    for item in wanted:
        name, _, parent = item.partition(":")
        try:
            data = docker_socket.get_json(f"/networks/{name}")
        except (OSError, ValueError) as exc:
            missing = "404" in str(exc) or "No such network" in str(exc) or "not found" in str(exc)
            detail = (
                f"Docker network {name} does not exist"
                if missing
                else f"cannot inspect network {name}: {exc}"
            )
            out.append(
                _check(
                    f"network {name}",
                    False,
                    detail,
                    f"create it: docker network create --driver macvlan --opt parent={parent or '<nic>'} "
                    f"--subnet <the pool's network> --gateway <its gateway> {name}",
                    "network",
                )
            )
            continue
        driver = str(data.get("Driver", ""))
        actual = str((data.get("Options") or {}).get("parent", ""))
        ok = driver == "macvlan" and (not parent or actual == parent)
        out.append(
            _check(
                f"network {name}",
                ok,
                f"{driver} on {actual or 'no parent'}"
                if ok
                else f"{name} is {driver} on {actual or 'no parent'}, not macvlan on {parent}",
                f"remove it (docker network rm {name}, once no container uses it) and let the portal create it again",
                "",
            )
        )
    return out


def _free_disk(path: str) -> dict[str, Any]:
    probe = path
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe.rstrip("/")) or "/"
    stat = os.statvfs(probe or "/")
    free = stat.f_bavail * stat.f_frsize
    total = stat.f_blocks * stat.f_frsize or 1
    ok = free >= MIN_FREE_BYTES and free / total >= MIN_FREE_FRACTION
    detail = f"{free / (1 << 30):.1f} GiB free of {total / (1 << 30):.1f} GiB under {path}"
    return _check(
        "free disk",
        ok,
        detail if ok else detail + f" (needs {MIN_FREE_BYTES >> 30} GiB and {MIN_FREE_FRACTION:.0%})",
        "free space on that filesystem: purge retained volumes on the host page, docker image prune",
        required=False,
    )


def _lxcfs(facts: dict[str, Any]) -> dict[str, Any]:
    root = facts.get("root")
    remedy = "apt install lxcfs, then systemctl enable --now lxcfs (and restart it if it died)"
    if not facts.get("running"):
        detail = f"not serving {root}: instances would see the host's memory and CPUs in free, top and /proc"
        return _check("LXCFS", False, detail, remedy, "lxcfs")
    if facts.get("broken"):
        detail = (
            f"{', '.join(facts['broken'])} under {root} fail (Transport endpoint is not connected): "
            "LXCFS died under its mount"
        )
        return _check("LXCFS", False, detail, remedy, "lxcfs")
    if facts.get("stale"):
        names = ", ".join(str(c.get("name", "?")) for c in facts["stale"])
        detail = f"instances with dead LXCFS files (LXCFS restarted under them): {names}"
        return _check("LXCFS", False, detail, "hostagent lxcfs-heal re-binds them; or restart them", "lxcfs")
    return _check("LXCFS", True, f"serving {len(facts.get('files') or [])} files from {root}")


def _bridges() -> dict[str, Any]:
    """Bridges that carry containers must keep one MAC: one that takes its lowest port's MAC
    changes address as containers come and go, and the host drops off the network."""
    if not check.sysfs_matches_namespace():
        return _check(
            "bridge MAC fixed",
            False,
            "/sys/class/net is not this network namespace's; bridges unknown",
            "run the agent with the host's own /sys (not from another network namespace)",
        )
    bridges = check.bridges()
    loose = [b for b in bridges if b.get("ports") and not b.get("mac_fixed")]
    if loose:
        names = ", ".join(f"{b['name']} (now {b['mac']})" for b in loose)
        detail = (
            f"{names} take their MAC from their ports, so the host drops off the network when "
            "containers come and go"
        )
    else:
        detail = (
            ", ".join(str(b["name"]) for b in bridges if b.get("ports")) or "no bridge carries containers"
        )
    return _check(
        "bridge MAC fixed",
        not loose,
        detail,
        "ip link set dev <bridge> address <its MAC>, and the same in its network config",
        "fix-network",
    )


def collect(
    networks: list[str] | None = None,
    forward_off: bool = False,
    volume_root: str | None = None,
    now: float | None = None,
    lxcfs_root: str | None = None,
) -> dict[str, Any]:
    checks: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    try:
        raw = docker_socket.get_json("/info")
    except (OSError, ValueError) as exc:
        checks.append(
            _check(
                "Docker engine",
                False,
                f"not reachable at {docker_socket.socket_path()}: {exc}",
                "apt install docker.io, then systemctl enable --now docker",
            )
        )
    if raw:
        version = str(raw.get("ServerVersion", ""))
        checks.append(
            _check(
                "Docker engine",
                _version(version) >= MIN_DOCKER,
                f"Docker {version}",
                f"upgrade Docker to {'.'.join(map(str, MIN_DOCKER))} or later (Debian 12's docker.io is 20.10)",
            )
        )
        driver = str(raw.get("Driver", ""))
        checks.append(
            _check(
                "storage driver overlay2",
                driver == "overlay2",
                driver
                if driver == "overlay2"
                else f"storage driver {driver or 'unknown'}: only overlay2 is supported",
                'set "storage-driver": "overlay2" in daemon.json (removing a container took 10 s on devicemapper)',
            )
        )
        config = read_docker_config()
        rotated = str(raw.get("LoggingDriver", "")) in ("local", "journald") or bool(
            (config.get("log-opts") or {}).get("max-size")
        )
        checks.append(
            _check(
                "log rotation",
                rotated,
                f"{raw.get('LoggingDriver', '?')} logs"
                + (
                    f", max-size {(config.get('log-opts') or {}).get('max-size')}"
                    if rotated
                    else ", never rotated"
                ),
                f'set "log-opts": {{"max-size": "10m", "max-file": "3"}} in {docker_config_path()} and restart dockerd',
                "daemon-json",
                required=False,
            )
        )
        live = bool(raw.get("LiveRestoreEnabled"))
        checks.append(
            _check(
                "live-restore",
                live,
                "on: restarting dockerd leaves instances running"
                if live
                else "off: restarting dockerd stops every instance",
                f'set "live-restore": true in {docker_config_path()} and restart dockerd',
                "daemon-json",
                required=False,
            )
        )
    cgroups = info.cgroup_version()
    checks.append(_check("cgroups", True, f"cgroup v{cgroups}: stats, limits and resize read its files"))
    swap = _swap_accounting(cgroups)
    checks.append(
        _check(
            "memory+swap accounting",
            swap,
            "available: a resize limits memory and memory+swap together"
            if swap
            else "missing: a resize cannot limit memory+swap, so an instance can swap past its limit",
            "boot with swapaccount=1 (add it to GRUB_CMDLINE_LINUX in /etc/default/grub, update-grub, reboot)",
        )
    )
    checks.append(_lxcfs(lxcfs.facts(lxcfs_root)))
    checks.extend(_networks(networks or []))
    checks.append(_bridges())
    if forward_off:
        with open(check.IP_FORWARD) as handle:
            forward = int(handle.read().strip())
        bridged = ", ".join(n.partition(":")[0] for n in networks or []) or "a public pool"
        checks.append(
            _check(
                "ip_forward off",
                forward == 0,
                f"net.ipv4.ip_forward={forward}"
                + (
                    ""
                    if forward == 0
                    else f" on a host bridged onto {bridged}: a stopped container's traffic floods the segment"
                ),
                "sysctl -w net.ipv4.ip_forward=0, and net.ipv4.ip_forward=0 in /etc/sysctl.d/90-slipway.conf",
                "fix-network",
            )
        )
    if volume_root:
        checks.append(_free_disk(volume_root))
    if now is not None:
        skew = time.time() - now
        checks.append(
            _check(
                "clock",
                abs(skew) <= MAX_CLOCK_SKEW,
                f"{skew:+.1f} s from the portal's",
                "keep the clock in sync: apt install systemd-timesyncd (or chrony)",
                required=False,
            )
        )
    return {"checks": checks, "ok": all(c["ok"] for c in checks)}
