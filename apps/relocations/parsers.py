"""Pure parsers for the VM inspection (apps.relocations.inspect): text and bytes read from a
legacy VM turned into values. Nothing here runs a command, so tests feed each one canned text."""

from __future__ import annotations

import contextlib
import ipaddress
import posixpath
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MASK = "********"
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)
# "scheme://user:password@host": the password part of a URL held in an innocent-looking name.
URL_PASSWORD = re.compile(r"(://[^/:@\s]*:)([^/@\s]+)(@)")

STATIC_SERVERS = {"nginx", "httpd", "apache2", "lighttpd"}
# Listeners that belong to the VM itself, not to the app being moved (comm, at most 15 chars).
# fmt: off
SYSTEM_DAEMONS = {
    "sshd", "sshd-session", "cron", "crond", "init", "systemd", "systemd-resolve", "systemd-network",
    "rpcbind", "rpc.statd", "rpc.mountd", "dnsmasq", "chronyd", "ntpd", "exim4", "master", "sendmail",
    "avahi-daemon", "cupsd", "snmpd", "rsyslogd", "dhclient",
}
# Never an app directory, nor anything inside them.
SYSTEM_TREES = (
    "/usr", "/etc", "/proc", "/sys", "/dev", "/bin", "/lib", "/lib32", "/lib64", "/libx32", "/sbin", "/boot",
    "/run", "/tmp", "/var/tmp", "/var/run", "/var/lock", "/var/log", "/var/cache", "/var/spool",  # noqa: S108
    "/var/mail", "/lost+found",
)
# fmt: on
# Never an app directory themselves; what is inside may be (/var/lib/tomcat9, /home/bob/app).
SYSTEM_DIRS = ("/", "/var", "/var/lib", "/home", "/root", "/srv", "/opt", "/var/www", "/mnt", "/media")
# /usr/local/<app> is a common home for hand-installed apps; these are not apps.
USR_LOCAL_SYSTEM = {"bin", "sbin", "lib", "lib64", "share", "include", "etc", "man", "src", "games"}

MAX_CANDIDATES = 10
MAX_CRON_LINES = 200
SAMPLE_MARK = "::slipway-sample::"


# --- pure parsers -----------------------------------------------------------------------------


def text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def parse_os_release(content: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in content.splitlines():
        name, sep, raw = line.strip().partition("=")
        if not sep or not name or name.startswith("#"):
            continue
        try:
            parts = shlex.split(raw)
        except ValueError:
            parts = [raw.strip("\"'")]
        values[name] = " ".join(parts)
    return {
        "pretty_name": values.get("PRETTY_NAME", values.get("NAME", "")),
        "id": values.get("ID", ""),
        "version_id": values.get("VERSION_ID", ""),
    }


def parse_uname(content: str) -> tuple[str, str]:
    """`uname -n -r` prints "<hostname> <kernel release>" in that order whatever the flag order."""
    parts = content.split()
    return (parts[0], parts[1]) if len(parts) >= 2 else ("", "")


def parse_meminfo(content: str) -> dict[str, int]:
    kb: dict[str, int] = {}
    for line in content.splitlines():
        name, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            kb[name.strip()] = int(fields[0])
    total = kb.get("MemTotal", 0)
    # Kernels before 3.14 have no MemAvailable; free + page cache is the old estimate.
    available = kb.get("MemAvailable", kb.get("MemFree", 0) + kb.get("Buffers", 0) + kb.get("Cached", 0))
    return {
        "total_mb": total // 1024,
        "available_mb": available // 1024,
        "used_mb": (total - available) // 1024,
    }


def cpu_times(stat: str) -> tuple[int, int]:
    """(total, idle) jiffies from the aggregate "cpu" line of /proc/stat."""
    for line in stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            numbers = [int(v) for v in fields[1:9] if v.isdigit()]
            # guest time is already counted in user; idle includes iowait.
            idle = numbers[3] + (numbers[4] if len(numbers) > 4 else 0)
            return sum(numbers), idle
    raise ValueError("no cpu line in /proc/stat")


def cpu_count(stat: str) -> int:
    return sum(1 for line in stat.splitlines() if re.match(r"cpu\d+\s", line))


def cpu_percent(stat_a: str, stat_b: str) -> float:
    total_a, idle_a = cpu_times(stat_a)
    total_b, idle_b = cpu_times(stat_b)
    total = total_b - total_a
    if total <= 0:
        return 0.0
    return round(100.0 * (total - (idle_b - idle_a)) / total, 1)


def process_ticks(stat_line: str) -> int:
    """utime + stime from one /proc/PID/stat line; comm may hold spaces and parentheses."""
    fields = stat_line.rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def process_cpu_percent(ticks_a: int, ticks_b: int, stat_a: str, stat_b: str) -> float:
    """Percent of one CPU, as top shows it. Both files count in USER_HZ, so the machine's total
    over its CPUs gives the elapsed ticks without asking for CLK_TCK."""
    elapsed = (cpu_times(stat_b)[0] - cpu_times(stat_a)[0]) / max(1, cpu_count(stat_a))
    if elapsed <= 0:
        return 0.0
    return round(100.0 * max(0, ticks_b - ticks_a) / elapsed, 1)


@dataclass
class Sample:
    stat_a: str
    stat_b: str
    ticks_a: dict[int, int]
    ticks_b: dict[int, int]


def parse_sample(content: str) -> Sample:
    """Output of SAMPLE_SCRIPT: /proc/stat then one /proc/PID/stat line per pid, twice."""
    first, mark, second = content.partition(SAMPLE_MARK + "\n")
    if not mark:
        raise ValueError("the second sample is missing")

    def split(part: str) -> tuple[str, dict[int, int]]:
        stat, ticks = [], {}
        for line in part.splitlines():
            head = line.split(" ", 1)[0]
            if head.isdigit() and "(" in line:
                with contextlib.suppress(IndexError, ValueError):
                    ticks[int(head)] = process_ticks(line)
            else:
                stat.append(line)
        return "\n".join(stat), ticks

    stat_a, ticks_a = split(first)
    stat_b, ticks_b = split(second)
    return Sample(stat_a, stat_b, ticks_a, ticks_b)


def parse_ip_addr(content: str) -> list[dict[str, Any]]:
    """`ip -o -4 addr show`: one line per address. Loopback addresses are left out."""
    found = []
    for line in content.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] != "inet":
            continue
        try:
            interface = ipaddress.IPv4Interface(fields[3])
        except ValueError:
            continue
        if interface.ip.is_loopback:
            continue
        found.append(
            {
                "address": str(interface.ip),
                "prefixlen": interface.network.prefixlen,
                "dev": fields[1].split("@")[0],
                "mac": "",
                "ssh": False,
            }
        )
    return found


def parse_ip_link(content: str) -> dict[str, str]:
    """`ip -o link`: interface name -> MAC address."""
    macs = {}
    for line in content.splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        name = fields[1].rstrip(":").split("@")[0]
        for i, value in enumerate(fields[:-1]):
            if value.startswith("link/") and value != "link/loopback":
                macs[name] = fields[i + 1]
                break
    return macs


@dataclass(frozen=True)
class Socket:
    address: str
    port: int
    pid: int | None = None
    process: str = ""
    inode: int = 0


def split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    host = host.strip("[]").split("%")[0]
    # "*" is "every address": old ss for 0.0.0.0, new ss for a dual-stack socket.
    return ("0.0.0.0" if host in ("*", "") else host), int(port)


def parse_ss(content: str) -> list[Socket]:
    """`ss -tlnp`: one Socket per (listening socket, process holding it)."""
    sockets = []
    for line in content.splitlines():
        fields = line.split()
        if "LISTEN" not in fields:
            continue
        at = fields.index("LISTEN")
        if len(fields) < at + 4:
            continue
        try:
            address, port = split_host_port(fields[at + 3])
        except ValueError:
            continue
        users = re.findall(r'\("((?:[^"\\]|\\.)*)",pid=(\d+)', line)
        if not users:
            sockets.append(Socket(address, port))
        for name, pid in users:
            sockets.append(Socket(address, port, int(pid), name))
    return sockets


def hex_address(value: str) -> str:
    """An address as /proc/net/tcp{,6} prints it: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(value)
    swapped = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(swapped)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def parse_proc_net_tcp(content: str) -> list[Socket]:
    """/proc/net/tcp or /proc/net/tcp6: the sockets in state 0A (LISTEN), with their inodes."""
    sockets = []
    for line in content.splitlines():
        fields = line.split()
        if len(fields) < 10 or fields[3] != "0A" or ":" not in fields[1]:
            continue
        host, _, port = fields[1].partition(":")
        try:
            sockets.append(Socket(hex_address(host), int(port, 16), inode=int(fields[9])))
        except ValueError:
            continue
    return sockets


def parse_socket_owners(content: str) -> dict[int, list[int]]:
    """Lines "/proc/PID/fd socket:[INODE]" (SOCKET_OWNERS_SCRIPT) -> inode -> pids."""
    owners: dict[int, list[int]] = {}
    for match in re.finditer(r"^/proc/(\d+)/fd socket:\[(\d+)\]$", content, re.MULTILINE):
        pids = owners.setdefault(int(match[2]), [])
        if int(match[1]) not in pids:
            pids.append(int(match[1]))
    return owners


def is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def parse_status(content: str) -> dict[str, str]:
    values = {}
    for line in content.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            values[name] = value.strip()
    return values


def parse_cmdline(data: bytes) -> list[str]:
    parts = data.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return [text(part) for part in parts]


def mask_value(name: str, value: str) -> str:
    if SECRET_NAME.search(name):
        return MASK
    return URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", value)


def parse_environ(data: bytes) -> dict[str, str]:
    """/proc/PID/environ (NUL separated), with the values of secret-looking names masked."""
    env = {}
    for item in data.split(b"\0"):
        name, sep, value = text(item).partition("=")
        if sep and name:
            env[name] = mask_value(name, value)
    return env


def parse_passwd(content: str) -> dict[int, str]:
    users: dict[int, str] = {}
    for line in content.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            users.setdefault(int(fields[2]), fields[0])
    return users


def parse_link(content: str) -> str:
    target = content.strip("\n")
    return target.removesuffix(" (deleted)")


def _names(exe: str, argv: list[str]) -> list[str]:
    names = [posixpath.basename(exe)] if exe else []
    if argv:
        # A process that rewrote its title ("nginx: master process ...") keeps its name first.
        first = argv[0].split(":")[0].split()
        if first:
            names.append(posixpath.basename(first[0]))
    return names


def _first_operand(args: list[str]) -> str:
    for i, arg in enumerate(args):
        if arg in ("-m", "-jar") and i + 1 < len(args):
            return f"{arg} {args[i + 1]}"
        if not arg.startswith("-"):
            return arg
    return ""


def detect_runtime(exe: str, argv: list[str]) -> tuple[str, str]:
    """(kind, evidence) from a process's executable and command line."""
    names = _names(exe, argv)
    shown = names[-1] if names else ""
    args = argv[1:]
    operand = _first_operand(args)
    said = f"{shown} {operand}".strip()
    if any(n == "java" or n.startswith("java") for n in names):
        for arg in args:
            if re.search(r"catalina|tomcat", arg, re.IGNORECASE):
                return "tomcat", f"{shown} {arg}"[:200]
        return "jvm", said[:200]
    if any(re.fullmatch(r"python[\d.]*|gunicorn|uwsgi|uvicorn", n) for n in names):
        return "python", said[:200]
    if any(n in ("node", "nodejs") for n in names):
        return "node", said[:200]
    for n in names:
        if n in STATIC_SERVERS:
            return "static", (exe or argv[0])[:200]
        if n == "busybox" and args[:1] == ["httpd"]:
            return "static", f"busybox httpd {' '.join(args[1:])}".strip()[:200]
    return "other", (f"{exe} {operand}".strip() if exe else said)[:200] or "unknown executable"


def argv_paths(argv: list[str]) -> list[str]:
    """Absolute paths named in a command line: bare, after "=", or in ":"-separated lists."""
    paths: list[str] = []
    for arg in argv[1:]:
        value = arg.partition("=")[2] if not arg.startswith("/") and "=" in arg else arg
        for part in value.split(":"):
            part = part.rstrip("*").rstrip("/") if part != "/" else part
            # "//host/x" is what is left of a URL, not a path.
            if part.startswith("/") and not part.startswith("//") and "\n" not in part and part not in paths:
                paths.append(part)
    return paths


def parse_find_types(content: str) -> dict[str, str]:
    """`find -H P... -maxdepth 0 -printf '%y %p\\0'` -> path -> type letter (d, f, l, ...)."""
    types = {}
    for item in content.split("\0"):
        kind, _, path = item.partition(" ")
        if path:
            types[path] = kind
    return types


def parse_fd_targets(content: str) -> list[str]:
    """`ls -l /proc/PID/fd`: the absolute paths the process has open (no devices, no /proc)."""
    targets = []
    for line in content.splitlines():
        _, arrow, target = line.partition(" -> ")
        if not arrow or not target.startswith("/") or target.endswith(" (deleted)"):
            continue
        if target.startswith(("/dev/", "/proc/", "/sys/")) or target in targets:
            continue
        targets.append(target)
    return targets


def parse_docroots(content: str) -> list[str]:
    roots = []
    for line in content.splitlines():
        fields = line.replace("=", " ").split()
        if len(fields) >= 2:
            root = fields[-1].strip("\"';")
            if root.startswith("/") and root not in roots:
                roots.append(root)
    return roots


def parse_du(content: str) -> int | None:
    fields = content.split()
    return int(fields[0]) if fields and fields[0].isdigit() else None


def parse_cron(content: str) -> list[dict[str, str]]:
    """`grep -r -H -Z -e '' SOURCES`: "path\\0line" per line; keeps the jobs."""
    jobs = []
    for line in content.splitlines():
        source, sep, entry = line.partition("\0")
        entry = entry.strip()
        if not sep or not entry or entry.startswith("#"):
            continue
        if re.match(r"[A-Za-z_][A-Za-z0-9_]*\s*=", entry):
            continue
        jobs.append({"source": source, "line": entry[:500]})
        if len(jobs) >= MAX_CRON_LINES:
            break
    return jobs


def parse_services(paths: Iterable[str]) -> list[dict[str, Any]]:
    """Files that mention the app (`grep -r -l`) -> the init scripts and systemd units among them."""
    services: list[dict[str, Any]] = []
    seen = set()
    for path in paths:
        directory, name = posixpath.split(path)
        if directory == "/etc/init.d":
            if name.startswith(".") or name in ("README", "skeleton", "rc", "rcS", "functions"):
                continue
            service = {
                "name": name,
                "kind": "sysv",
                "path": path,
                "start": [path, "start"],
                "stop": [path, "stop"],
            }
        elif name.endswith(".service") and "@" not in name:
            service = _unit(name, path)
        elif posixpath.basename(directory).endswith(".service.d"):
            service = _unit(posixpath.basename(directory)[: -len(".d")], path)
        else:
            continue
        if service["name"] not in seen:
            seen.add(service["name"])
            services.append(service)
    return services


def _unit(unit: str, path: str) -> dict[str, Any]:
    return {
        "name": unit.removesuffix(".service"),
        "kind": "systemd",
        "path": path,
        "start": ["systemctl", "start", unit],
        "stop": ["systemctl", "stop", unit],
    }


def is_system_dir(path: str) -> bool:
    if path in SYSTEM_DIRS or any(path == t or path.startswith(t + "/") for t in SYSTEM_TREES):
        if path.startswith("/usr/local/"):
            return path.split("/")[3] in USR_LOCAL_SYSTEM
        return True
    return path.startswith("/usr/") and not path.startswith("/usr/local/")


def _inside(path: str, parent: str) -> bool:
    return path.startswith(parent.rstrip("/") + "/")


@dataclass
class Candidate:
    path: str
    reason: str
    pids: set[int] = field(default_factory=set)


def merge_candidates(raw: Iterable[Candidate], limit: int = MAX_CANDIDATES) -> list[Candidate]:
    """Best first; system directories dropped. A directory inside another candidate is folded
    into it, and the outer one takes the better rank (an app started from /opt/tomcat/bin is
    /opt/tomcat)."""
    merged: list[Candidate] = []
    for candidate in raw:
        path = posixpath.normpath(candidate.path)
        if not path.startswith("/") or path.startswith("//") or is_system_dir(path):
            continue
        holder = next((c for c in merged if c.path == path or _inside(path, c.path)), None)
        if holder is not None:
            holder.pids |= candidate.pids
            continue
        inner = [i for i, c in enumerate(merged) if _inside(c.path, path)]
        if not inner:
            merged.append(Candidate(path, candidate.reason, set(candidate.pids)))
            continue
        best = merged[inner[0]]
        folded = Candidate(
            path, f"{candidate.reason}; contains {best.path} ({best.reason})", set(candidate.pids)
        )
        for i in inner:
            folded.pids |= merged[i].pids
        merged[inner[0]] = folded
        merged = [c for i, c in enumerate(merged) if i not in inner[1:]]
    return merged[:limit]


def pick_main(listening: list[dict[str, Any]]) -> int | None:
    """The app's process among the listeners: not a system daemon; then a port above 1024, a
    working directory other than /, a known runtime; then the lowest pid."""
    best: tuple[tuple[bool, bool, bool], int] | None = None
    for entry in listening:
        pid = entry.get("pid")
        if pid is None or entry.get("process", "") in SYSTEM_DAEMONS:
            continue
        score = (entry["port"] > 1024, entry.get("cwd", "") not in ("", "/"), entry.get("runtime") != "other")
        if best is None or (score, -pid) > (best[0], -best[1]):
            best = (score, pid)
    return best[1] if best else None
