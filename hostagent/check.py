"""`hostagent check`: host facts the portal judges (bridge MACs, IP forwarding, storage driver).

The agent reports; the portal decides which facts matter for which host. Read from this
process's own view: /sys/class/net must be the sysfs of the host's network namespace.
"""

from __future__ import annotations

import os
import socket
import subprocess

from hostagent import info, lxcfs

SYS_NET = "/sys/class/net"
IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"
# /sys/class/net/*/addr_assign_type: 3 means the address was set explicitly (NET_ADDR_SET);
# otherwise a bridge takes the lowest MAC of its ports and changes as ports come and go.
NET_ADDR_SET = 3


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read().strip()


def sysfs_matches_namespace() -> bool:
    """True if /sys/class/net lists the interfaces of this network namespace."""
    try:
        return {name for _, name in socket.if_nameindex()} == set(os.listdir(SYS_NET))
    except OSError:
        return False


def bridges() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for name in sorted(os.listdir(SYS_NET)):
        base = os.path.join(SYS_NET, name)
        if not os.path.isdir(os.path.join(base, "bridge")):
            continue
        ports = (
            sorted(os.listdir(os.path.join(base, "brif")))
            if os.path.isdir(os.path.join(base, "brif"))
            else []
        )
        out.append(
            {
                "name": name,
                "mac": _read(os.path.join(base, "address")),
                "mac_fixed": int(_read(os.path.join(base, "addr_assign_type"))) == NET_ADDR_SET,
                "ports": len(ports),
            }
        )
    return out


def collect(lxcfs_root: str | None = None) -> dict[str, object]:
    docker = info.docker_facts()
    visible = sysfs_matches_namespace()
    return {
        "ip_forward": int(_read(IP_FORWARD)),
        "bridges": bridges() if visible else None,
        "bridges_error": "" if visible else "/sys/class/net is not this network namespace's; bridges unknown",
        "storage_driver": docker.get("storage_driver", ""),
        "docker_reachable": bool(docker.get("reachable")),
        "cgroup_version": info.cgroup_version(),
        "lxcfs": lxcfs.facts(lxcfs_root),  # root: the argument, else $SLIPWAY_LXCFS_ROOT or /var/lib/lxcfs
    }


SYSCTL_DIR_ENV = "SLIPWAY_SYSCTL_DIR"  # where sysctl settings persist (default below)
SYSCTL_DIR = "/etc/sysctl.d"
SYSCTL_FILE = "90-slipway.conf"
SYSCTL_TEXT = "# Written by Slipway's hostagent: a host bridged onto a public pool must not forward.\nnet.ipv4.ip_forward = 0\n"


def sysctl_path() -> str:
    return os.path.join(os.environ.get(SYSCTL_DIR_ENV) or SYSCTL_DIR, SYSCTL_FILE)


def fix_network() -> dict[str, object]:
    """Turn IP forwarding off (and keep it off after a reboot) and give every bridge its current
    MAC explicitly."""
    fixed: list[str] = []
    if int(_read(IP_FORWARD)) != 0:
        with open(IP_FORWARD, "w") as handle:
            handle.write("0\n")
        fixed.append("net.ipv4.ip_forward=0")
    path = sysctl_path()
    try:
        kept = _read(path) == SYSCTL_TEXT.strip()
    except OSError:
        kept = False
    if not kept:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as handle:
            handle.write(SYSCTL_TEXT)
        os.replace(path + ".tmp", path)
        fixed.append(f"kept off after a reboot in {path}")
    for bridge in bridges() if sysfs_matches_namespace() else []:
        if not bridge["mac_fixed"]:
            subprocess.run(
                ["ip", "link", "set", "dev", str(bridge["name"]), "address", str(bridge["mac"])],
                check=True,
                capture_output=True,
                text=True,
            )
            fixed.append(f"{bridge['name']} address {bridge['mac']} set explicitly")
    return {"fixed": fixed, "after": collect()}
