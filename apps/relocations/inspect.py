"""Inspect a legacy VM before its app moves into a container: read-only commands through a
runner, their output turned into a report (a JSON-serialisable dict).

Nothing here talks SSH or Django: the caller passes a runner (argv in, exit code and bytes out),
so every parser (apps.relocations.parsers) is a small pure function that tests feed with canned
text. Commands are argv lists; where a pipe or a glob is needed the script is a constant and
values travel as positional arguments ("$1"), never inside the script. Every section stands
alone: a missing tool or a permission denied (a non-root login) becomes a line in
report["errors"], not a failure.
"""

from __future__ import annotations

import posixpath
import shlex
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from apps.relocations.parsers import (
    SAMPLE_MARK,
    SYSTEM_DAEMONS,
    Candidate,
    Sample,
    Socket,
    _inside,
    argv_paths,
    cpu_count,
    cpu_percent,
    detect_runtime,
    is_loopback,
    merge_candidates,
    parse_cmdline,
    parse_cron,
    parse_docroots,
    parse_du,
    parse_environ,
    parse_fd_targets,
    parse_find_types,
    parse_ip_addr,
    parse_ip_link,
    parse_link,
    parse_meminfo,
    parse_os_release,
    parse_passwd,
    parse_proc_net_tcp,
    parse_sample,
    parse_services,
    parse_socket_owners,
    parse_ss,
    parse_status,
    parse_uname,
    pick_main,
    process_cpu_percent,
    text,
)


class Result(Protocol):
    # Properties, so a frozen dataclass (apps.hosts.transport.CommandResult) satisfies it.
    @property
    def exit_code(self) -> int: ...

    @property
    def stdout(self) -> bytes: ...

    @property
    def stderr(self) -> bytes: ...

    @property
    def truncated(self) -> bool: ...


class Runner(Protocol):
    def __call__(self, argv: list[str], *, timeout: float = 20, max_output: int = 1_000_000) -> Result: ...


CONFIG_PATTERNS = ("*.conf", "*.ini", "*.yml", "*.yaml", "*.properties", "*.xml", "*.json", "*.toml", ".env")
MAX_PIDS = 20
MAX_CONFIG_FILES = 50
SAMPLE_SECONDS = 0.5

# Constant scripts: data only ever arrives as "$1"/"$@".
SAMPLE_SCRIPT = (
    'cat /proc/stat; for p; do cat "/proc/$p/stat" 2>/dev/null; done; '
    f"echo {SAMPLE_MARK}; sleep {SAMPLE_SECONDS}; "
    'cat /proc/stat; for p; do cat "/proc/$p/stat" 2>/dev/null; done'
)
SOCKET_OWNERS_SCRIPT = 'find /proc/[0-9]*/fd -mindepth 1 -maxdepth 1 -lname "socket:*" -printf "%h %l\\n"'
APP_DIRS_SCRIPT = 'for d in /srv/* /opt/* /var/www/* /home/*/app*; do if [ -d "$d" ] && [ ! -L "$d" ]; then printf "%s\\0" "$d"; fi; done'
# From /: find complains when it cannot return to a working directory it may not read.
COUNT_FILES_SCRIPT = 'cd / && find "$1" -xdev -type f | wc -l'
CRON_SOURCES = ["/etc/crontab", "/etc/cron.d", "/var/spool/cron/crontabs"]
SERVICE_DIRS = ["/etc/init.d", "/etc/systemd/system", "/lib/systemd/system"]
DOCROOT_CONFIGS = ["/etc/nginx", "/etc/apache2", "/etc/httpd", "/etc/lighttpd"]
DOCROOT_PATTERN = r"^[[:space:]]*(root|DocumentRoot|server\.document-root)[[:space:]=]+[^;#]+"


# --- running the commands ---------------------------------------------------------------------


def _short(argv: list[str], result: Result) -> str:
    if result.exit_code == 127:
        return f"{argv[0]}: command not found"
    lines = text(result.stderr).strip().splitlines()
    if lines:
        return lines[0][:200]
    shown = "script" if argv[0] == "sh" else shlex.join(argv)[:100]
    return f"{shown} failed (exit code {result.exit_code})"


@dataclass
class Process:
    pid: int
    name: str = ""
    ppid: int = 0
    uid: int | None = None
    rss_kb: int = 0
    argv: list[str] = field(default_factory=list)
    cwd: str = ""
    exe: str = ""
    env: dict[str, str] = field(default_factory=dict)
    cpu_percent: float = 0.0
    runtime: str = "other"
    evidence: str = ""
    config_files: list[str] = field(default_factory=list)


class Inspection:
    # After this many runner exceptions in a row the host is taken as gone: no point waiting
    # out a timeout for each of the remaining commands.
    GIVE_UP_AFTER = 3

    def __init__(self, run: Runner, ssh_address: str) -> None:
        self.run = run
        self.ssh_address = ssh_address
        self.errors: list[str] = []
        self.failures_in_a_row = 0

    def error(self, message: str) -> None:
        if message not in self.errors:
            self.errors.append(message)

    def cmd(
        self,
        section: str,
        argv: list[str],
        *,
        timeout: float = 10,
        max_output: int = 262_144,
        quiet: bool = False,
    ) -> Result | None:
        """The result, or None (with an error recorded) if the runner raised. A non-zero exit is
        the caller's to judge: grep and find exit 1 or 2 with useful output."""
        if self.failures_in_a_row >= self.GIVE_UP_AFTER:
            return None
        try:
            result = self.run(argv, timeout=timeout, max_output=max_output)
        except Exception as exc:  # the runner's own errors (timeouts, lost connection) all end here
            self.failures_in_a_row += 1
            self.error(f"{section}: {exc}"[:300])
            if self.failures_in_a_row == self.GIVE_UP_AFTER:
                self.error("stopped: the VM did not answer three commands in a row")
            return None
        self.failures_in_a_row = 0
        if result.truncated and not quiet:
            self.error(f"{section}: output cut at {max_output} bytes")
        return result

    def ok(self, section: str, argv: list[str], **kwargs: Any) -> bytes | None:
        """stdout of a command that must succeed; otherwise None and an error."""
        result = self.cmd(section, argv, **kwargs)
        if result is None:
            return None
        if result.exit_code != 0:
            self.error(f"{section}: {_short(argv, result)}")
            return None
        return result.stdout

    # --- sections ---

    def os(self) -> dict[str, Any]:
        report: dict[str, Any] = {"pretty_name": "", "id": "", "version_id": "", "kernel": "", "hostname": ""}
        for path in ("/etc/os-release", "/usr/lib/os-release"):
            result = self.cmd("os", ["cat", path], max_output=65536)
            if result is not None and result.exit_code == 0:
                report.update(parse_os_release(text(result.stdout)))
                break
        else:
            self.error("os: no /etc/os-release")
        out = self.ok("os", ["uname", "-n", "-r"], max_output=4096)
        if out is not None:
            report["hostname"], report["kernel"] = parse_uname(text(out))
        return report

    def memory(self) -> dict[str, int]:
        out = self.ok("memory", ["cat", "/proc/meminfo"], max_output=65536)
        return (
            parse_meminfo(text(out)) if out is not None else {"total_mb": 0, "available_mb": 0, "used_mb": 0}
        )

    def addresses(self) -> list[dict[str, Any]]:
        out = self.ok("addresses", ["ip", "-o", "-4", "addr", "show"])
        if out is None:
            return []
        found = parse_ip_addr(text(out))
        links = self.ok("addresses", ["ip", "-o", "link"])
        macs = parse_ip_link(text(links)) if links is not None else {}
        for entry in found:
            entry["mac"] = macs.get(entry["dev"], "")
            entry["ssh"] = bool(self.ssh_address) and entry["address"] == self.ssh_address
        return found

    def sockets(self) -> list[Socket]:
        result = self.cmd("listening", ["ss", "-t", "-l", "-n", "-p"], max_output=1_000_000)
        if result is not None and result.exit_code == 0:
            return parse_ss(text(result.stdout))
        if self.failures_in_a_row:
            return []
        # No iproute2: the kernel's tables, and the owners from each process's fd links.
        # The kernel lists listening sockets first, so a cut in a busy table loses only connections.
        tcp = self.ok("listening", ["cat", "/proc/net/tcp"], max_output=4_000_000, quiet=True)
        sockets = parse_proc_net_tcp(text(tcp)) if tcp is not None else []
        tcp6 = self.cmd("listening", ["cat", "/proc/net/tcp6"], max_output=4_000_000, quiet=True)
        if tcp6 is not None and tcp6.exit_code == 0:  # absent where IPv6 is off: not an error
            sockets += parse_proc_net_tcp(text(tcp6.stdout))
        if not sockets:
            return []
        owners_result = self.cmd("listening", ["sh", "-c", SOCKET_OWNERS_SCRIPT], max_output=4_000_000)
        owners = parse_socket_owners(text(owners_result.stdout)) if owners_result is not None else {}
        with_pids = []
        for socket in sockets:
            pids = owners.get(socket.inode, [])
            with_pids += [Socket(socket.address, socket.port, pid, "", socket.inode) for pid in pids]
            if not pids:
                with_pids.append(socket)
        return with_pids

    def process(self, pid: int) -> Process:
        proc = Process(pid)
        base = f"/proc/{pid}"
        status = self.ok(f"process {pid}", ["cat", f"{base}/status"], max_output=65536)
        if status is not None:
            values = parse_status(text(status))
            proc.name = values.get("Name", "")
            proc.ppid = int(values.get("PPid", "0") or 0)
            uid = values.get("Uid", "").split()
            proc.uid = int(uid[0]) if uid and uid[0].isdigit() else None
            rss = values.get("VmRSS", "0").split()
            proc.rss_kb = int(rss[0]) if rss and rss[0].isdigit() else 0
        return proc

    def details(self, proc: Process) -> None:
        base = f"/proc/{proc.pid}"
        section = f"process {proc.pid} ({proc.name or '?'})"
        cmdline = self.ok(section, ["cat", f"{base}/cmdline"], max_output=262_144)
        if cmdline is not None:
            proc.argv = parse_cmdline(cmdline)
        for attr in ("cwd", "exe"):
            out = self.ok(section, ["readlink", f"{base}/{attr}"], max_output=8192)
            if out is not None:
                setattr(proc, attr, parse_link(text(out)))
        environ = self.ok(section, ["cat", f"{base}/environ"], max_output=1_000_000)
        if environ is not None:
            proc.env = parse_environ(environ)
        proc.runtime, proc.evidence = detect_runtime(proc.exe, proc.argv)

    def sample(self, pids: list[int]) -> Sample | None:
        out = self.ok("cpu", ["sh", "-c", SAMPLE_SCRIPT, "sh", *map(str, pids)], max_output=1_000_000)
        if out is None:
            return None
        try:
            return parse_sample(text(out))
        except ValueError as exc:
            self.error(f"cpu: {exc}")
            return None

    def users(self, uids: set[int]) -> dict[int, str]:
        if not uids:
            return {}
        result = self.cmd("users", ["getent", "passwd", *map(str, sorted(uids))], max_output=65536)
        if result is not None and result.exit_code in (0, 2):  # 2: some uid has no name
            return parse_passwd(text(result.stdout))
        out = self.ok("users", ["cat", "/etc/passwd"], max_output=1_000_000)
        return parse_passwd(text(out)) if out is not None else {}

    def path_types(self, section: str, paths: list[str]) -> dict[str, str]:
        paths = [p for p in paths if p.startswith("/")]  # never an option to find
        if not paths:
            return {}
        result = self.cmd(
            section, ["find", "-H", *paths, "-maxdepth", "0", "-printf", "%y %p\\0"], max_output=262_144
        )
        return parse_find_types(text(result.stdout)) if result is not None else {}

    def candidates(self, procs: list[Process]) -> list[Candidate]:
        raw: list[Candidate] = []
        wanted = {p.pid: argv_paths(p.argv)[:40] for p in procs}
        types = self.path_types("candidates", [path for paths in wanted.values() for path in paths])
        for proc in procs:
            who = f"{proc.name or 'process'} (pid {proc.pid})"
            if proc.cwd and proc.cwd != "/":
                raw.append(Candidate(proc.cwd, f"working directory of {who}", {proc.pid}))
            for path in wanted[proc.pid]:
                kind = types.get(path)
                if kind == "d":
                    raw.append(Candidate(path, f"named in the command line of {who}", {proc.pid}))
                elif kind == "f":
                    raw.append(
                        Candidate(posixpath.dirname(path), f"holds {path}, named by {who}", {proc.pid})
                    )
            for name in ("CATALINA_BASE", "CATALINA_HOME"):
                if proc.env.get(name, "").startswith("/"):
                    raw.append(Candidate(proc.env[name], f"{name} of {who}", {proc.pid}))
        if any(p.runtime == "static" for p in procs):
            result = self.cmd(
                "candidates",
                ["grep", "-r", "-h", "-o", "-E", "-e", DOCROOT_PATTERN, *DOCROOT_CONFIGS],
                quiet=True,
            )
            if result is not None:
                static = {p.pid for p in procs if p.runtime == "static"}
                raw += [Candidate(root, "document root in the web server's configuration", static)
                        for root in parse_docroots(text(result.stdout))]  # fmt: skip
        out = self.cmd("candidates", ["sh", "-c", APP_DIRS_SCRIPT], max_output=262_144)
        if out is not None:
            for path in sorted(p for p in text(out.stdout).split("\0") if p):
                raw.append(Candidate(path, f"directory under {posixpath.dirname(path)}"))
        return merge_candidates(raw)

    def measure(self, candidate: Candidate) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "path": candidate.path,
            "size_bytes": 0,
            "files": 0,
            "reason": candidate.reason,
        }
        du_argv = ["du", "-s", "-b", "--one-file-system", "--", candidate.path]
        du = self.cmd("candidates", du_argv, timeout=15)
        if du is not None:
            size = parse_du(text(du.stdout))
            entry["size_bytes"] = size or 0
            if du.exit_code != 0:
                self.error(f"size of {candidate.path}: {_short(du_argv, du)}")
        count_argv = ["sh", "-c", COUNT_FILES_SCRIPT, "sh", candidate.path]
        count = self.cmd("candidates", count_argv, timeout=15)
        if count is not None:
            counted = text(count.stdout).strip()
            entry["files"] = int(counted) if counted.isdigit() else 0
            if count.stderr.strip():
                self.error(f"files in {candidate.path}: {_short(count_argv, count)}")
        return entry

    def config_files(self, procs: list[Process], dirs: dict[int, str]) -> None:
        found: dict[str, list[str]] = {}
        for directory in sorted(set(dirs.values())):
            names: list[str] = []
            for pattern in CONFIG_PATTERNS:
                names += ["-o", "-name", pattern] if names else ["-name", pattern]
            result = self.cmd(
                "config files",
                ["find", directory, "-maxdepth", "2", "-type", "f", "(", *names, ")", "-print0"],
            )
            if result is not None:
                found[directory] = sorted(p for p in text(result.stdout).split("\0") if p)
        opened: dict[int, list[str]] = {}
        for proc in procs:
            out = self.ok(
                f"open files of pid {proc.pid}", ["ls", "-l", f"/proc/{proc.pid}/fd"], max_output=1_000_000
            )
            if out is None:
                continue
            directory = dirs.get(proc.pid, "")
            opened[proc.pid] = [
                t
                for t in parse_fd_targets(text(out))
                if t.startswith("/etc/") or (directory and _inside(t, directory))
            ]
        types = self.path_types("config files", sorted({t for targets in opened.values() for t in targets}))
        for proc in procs:
            files = [t for t in opened.get(proc.pid, []) if types.get(t) == "f"]
            files += [f for f in found.get(dirs.get(proc.pid, ""), []) if f not in files]
            proc.config_files = files[:MAX_CONFIG_FILES]

    def cron(self) -> list[dict[str, str]]:
        result = self.cmd(
            "cron", ["grep", "-r", "-H", "-I", "-Z", "-e", "", *CRON_SOURCES], max_output=1_000_000
        )
        if result is None:
            return []
        problems = [line for line in text(result.stderr).splitlines() if "No such file" not in line]
        if problems:
            self.error(f"cron: {problems[0][:200]}")
        return parse_cron(text(result.stdout))

    def services(self, needles: list[str]) -> list[dict[str, Any]]:
        if not needles:
            return []
        patterns = [part for needle in needles for part in ("-e", needle)]
        result = self.cmd("services", ["grep", "-r", "-l", "-I", "-F", *patterns, "--", *SERVICE_DIRS])
        if result is None:
            return []
        problems = [line for line in text(result.stderr).splitlines() if "No such file" not in line]
        if problems:
            self.error(f"services: {problems[0][:200]}")
        return parse_services(line for line in text(result.stdout).splitlines() if line)


def _listener(socket: Socket, proc: Process | None, users: dict[int, str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"port": socket.port, "address": socket.address, "pid": socket.pid}
    if proc is None:
        entry.update(process=socket.process, argv=[], cwd="", exe="", user="", rss_mb=0.0, cpu_percent=0.0)
        entry.update(runtime="other", env={}, config_files=[])
        return entry
    user = users.get(proc.uid, str(proc.uid)) if proc.uid is not None else ""
    entry.update(
        process=proc.name or socket.process,
        argv=proc.argv,
        cwd=proc.cwd,
        exe=proc.exe,
        user=user,
        rss_mb=round(proc.rss_kb / 1024, 1),
        cpu_percent=proc.cpu_percent,
        runtime=proc.runtime,
        env=proc.env,
        config_files=proc.config_files,
    )
    return entry


def _keep_listeners(sockets: list[Socket], procs: dict[int, Process]) -> list[Socket]:
    """One socket per (port, pid), by port: no loopback-only sockets (they serve nothing outside),
    no sshd (how the portal gets in), no workers sharing their parent's socket (nginx, gunicorn)."""
    on_port: dict[int, set[int]] = {}
    for s in sockets:
        if s.pid is not None:
            on_port.setdefault(s.port, set()).add(s.pid)
    kept: dict[tuple[int, int | None], Socket] = {}
    for s in sockets:
        proc = procs.get(s.pid) if s.pid is not None else None
        if is_loopback(s.address) or (s.pid is not None and proc is None):
            continue
        name = (proc.name if proc else "") or s.process
        if name.startswith("sshd") or (s.pid is None and s.port == 22):
            continue
        if proc is not None and proc.ppid in on_port[s.port]:
            continue
        kept.setdefault((s.port, s.pid), s)
    return sorted(kept.values(), key=lambda s: (s.port, s.pid or 0))


def inspect_vm(run: Runner, *, ssh_address: str = "") -> dict[str, Any]:
    """Inspect the VM behind `run`; see the module docstring. Never raises for what the VM
    lacks or refuses: each section that could not be read leaves a line in "errors"."""
    started = time.monotonic()
    job = Inspection(run, ssh_address)
    os_info = job.os()
    memory = job.memory()
    addresses = job.addresses()

    sockets = [s for s in job.sockets() if not is_loopback(s.address)]
    procs: dict[int, Process] = {}
    for pid in dict.fromkeys(s.pid for s in sockets if s.pid is not None):
        if len(procs) >= MAX_PIDS:
            job.error(f"listening: only the first {MAX_PIDS} processes were looked at")
            break
        procs[pid] = job.process(pid)
    kept = _keep_listeners(sockets, procs)
    unseen = sorted({s.port for s in kept if s.pid is None})
    if unseen:
        job.error(f"listening: no process visible behind port {', '.join(map(str, unseen))} (not root?)")
    live = {pid: procs[pid] for pid in dict.fromkeys(s.pid for s in kept if s.pid is not None)}
    for proc in live.values():
        job.details(proc)
    users = job.users({p.uid for p in live.values() if p.uid is not None})

    cpu: dict[str, Any] = {"count": 0, "used_percent": 0.0}
    sample = job.sample(list(live))
    if sample is not None:
        try:
            cpu = {
                "count": cpu_count(sample.stat_a),
                "used_percent": cpu_percent(sample.stat_a, sample.stat_b),
            }
            for pid, proc in live.items():
                if pid in sample.ticks_a and pid in sample.ticks_b:
                    proc.cpu_percent = process_cpu_percent(
                        sample.ticks_a[pid], sample.ticks_b[pid], sample.stat_a, sample.stat_b
                    )
        except (ValueError, IndexError) as exc:
            job.error(f"cpu: cannot read /proc/stat ({exc})")

    def listeners() -> list[dict[str, Any]]:
        return [_listener(s, procs.get(s.pid) if s.pid is not None else None, users) for s in kept]

    main_pid = pick_main(listeners())
    main = live.get(main_pid) if main_pid is not None else None
    # The main process's directories rank first, then the other listeners', system daemons last.
    ordered = sorted(live.values(), key=lambda p: (p.pid != main_pid, p.name in SYSTEM_DAEMONS))
    found = job.candidates(ordered)
    dirs: dict[int, str] = {}  # each process's directory: the best candidate that came from it
    for candidate in found:
        for pid in candidate.pids:
            dirs.setdefault(pid, candidate.path)
    job.config_files(list(live.values()), dirs)
    candidates = [job.measure(c) for c in found]

    needles = []
    if main is not None:
        if main.pid in dirs:
            needles.append(dirs[main.pid])
        if len(main.argv) > 1 and main.argv[1].startswith("/"):
            needles.append(main.argv[1])
    services = job.services(needles)
    cron = job.cron()

    if main is not None:
        runtime = {"kind": main.runtime, "evidence": main.evidence, "pid": main.pid}
    else:
        runtime = {"kind": "other", "evidence": "no listening application process found", "pid": None}
    return {
        "os": os_info,
        "cpu": cpu,
        "memory": memory,
        "addresses": addresses,
        "listening": listeners(),
        "runtime": runtime,
        "candidates": candidates,
        "config_files": main.config_files if main is not None else [],
        "env": main.env if main is not None else {},
        "cron": cron,
        "services": services,
        "main_pid": main_pid,
        "errors": job.errors,
        "duration_s": round(time.monotonic() - started, 2),
    }
