"""The VM inspection without a VM: its parsers fed with canned output, and whole inspections
through a fake VM that answers the module's commands, for the faults a real one will not produce
on demand (no `ss`, no `ip`, a non-root login, a runner that raises). The real VM is in
tests/docker/test_relocation_inspect_lab.py."""

from __future__ import annotations

import ast
import ipaddress
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from apps.relocations import inspect, parsers
from apps.relocations.inspect import inspect_vm
from apps.relocations.parsers import (
    MASK,
    Candidate,
    Socket,
    argv_paths,
    cpu_count,
    cpu_percent,
    detect_runtime,
    merge_candidates,
    parse_cron,
    parse_environ,
    parse_fd_targets,
    parse_ip_addr,
    parse_ip_link,
    parse_meminfo,
    parse_os_release,
    parse_proc_net_tcp,
    parse_sample,
    parse_services,
    parse_socket_owners,
    parse_ss,
    pick_main,
    process_cpu_percent,
    process_ticks,
)

SCHEMA = {
    "os", "cpu", "memory", "addresses", "listening", "runtime", "candidates", "config_files", "env", "cron",
    "services", "main_pid", "errors", "duration_s",
}  # fmt: skip
LISTENER_KEYS = {
    "port", "address", "pid", "process", "argv", "cwd", "exe", "user", "rss_mb", "cpu_percent", "runtime", "env",
    "config_files",
}  # fmt: skip

OS_RELEASE = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
ID=debian
HOME_URL="https://www.debian.org/"
"""

MEMINFO = """\
MemTotal:        2048000 kB
MemFree:          512000 kB
MemAvailable:    1536000 kB
Buffers:           10240 kB
Cached:           409600 kB
"""

STAT_A = """\
cpu  1000 0 500 8000 500 0 0 0 0 0
cpu0 500 0 250 4000 250 0 0 0 0 0
cpu1 500 0 250 4000 250 0 0 0 0 0
intr 12345 0 0
ctxt 999
"""
# 100 jiffies later on 2 CPUs (50 each, 0.5 s at USER_HZ 100): 30 busy, 70 idle.
STAT_B = """\
cpu  1020 0 510 8060 510 0 0 0 0 0
cpu0 510 0 255 4030 255 0 0 0 0 0
cpu1 510 0 255 4030 255 0 0 0 0 0
intr 12400 0 0
ctxt 1010
"""

IP_ADDR = """\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
2: eth0    inet 10.213.231.11/16 brd 10.213.255.255 scope global eth0\\       valid_lft forever preferred_lft forever
2: eth0    inet 10.213.231.10/16 scope global secondary eth0\\       valid_lft forever preferred_lft forever
3: eth1@if9    inet 192.168.5.7/24 brd 192.168.5.255 scope global eth1\\       valid_lft forever preferred_lft forever
"""
IP_LINK = """\
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 02:ef:a2:23:58:e9 brd ff:ff:ff:ff:ff:ff
3: eth1@if9: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default\\    link/ether 0a:00:00:00:00:07 brd ff:ff:ff:ff:ff:ff link-netnsid 0
"""

SS = """\
State  Recv-Q Send-Q Local Address:Port  Peer Address:PortProcess
LISTEN 0      5            0.0.0.0:8080       0.0.0.0:*    users:(("python3",pid=39,fd=3))
LISTEN 0      128    10.213.231.11:22         0.0.0.0:*    users:(("sshd",pid=20,fd=3))
LISTEN 0      4096   127.0.0.53%lo:53         0.0.0.0:*    users:(("systemd-resolve",pid=9,fd=14))
LISTEN 0      511             [::]:9090          [::]:*    users:(("node",pid=50,fd=18))
LISTEN 0      511                *:80               *:*    users:(("apache2",pid=70,fd=4),("apache2",pid=71,fd=4))
LISTEN 0      128          0.0.0.0:2024       0.0.0.0:*
"""

# From a real machine; line 2 is an established connection, not a listener.
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1136 1 000000007be32ef8 100 0 0 10 0
   1: 0100007F:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3203857 1 000000006c775a1e 100 0 0 10 0
   2: 0100D50A:DDFC 0BE6D50A:0016 06 00000000:00000000 03:0000150C 00000000     0        0 0 3 0000000031749f4d
   3: 0BE7D50A:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 000000007be32ef8 100 0 0 10 0
"""
PROC_NET_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:2382 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 3001 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:0277 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3002 1 0 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3003 1 0 100 0 0 10 0
   3: 000080FE00000000FF0000000100A8C0:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3004 1 0 100 0 0 10 0
"""


# --- parsers --------------------------------------------------------------------------------


def test_it_reads_os_release_with_and_without_quotes() -> None:
    assert parse_os_release(OS_RELEASE) == {
        "pretty_name": "Debian GNU/Linux 12 (bookworm)",
        "id": "debian",
        "version_id": "12",
    }
    assert parse_os_release("NAME='Old Linux\nbroken line\n")["pretty_name"] == "Old Linux"


def test_it_reads_memory_and_estimates_it_on_kernels_without_memavailable() -> None:
    assert parse_meminfo(MEMINFO) == {"total_mb": 2000, "available_mb": 1500, "used_mb": 500}
    old = "\n".join(line for line in MEMINFO.splitlines() if not line.startswith("MemAvailable"))
    assert parse_meminfo(old)["available_mb"] == (512000 + 10240 + 409600) // 1024


def test_cpu_use_comes_from_the_difference_of_two_samples() -> None:
    assert cpu_count(STAT_A) == 2
    assert cpu_percent(STAT_A, STAT_B) == 30.0
    assert cpu_percent(STAT_A, STAT_A) == 0.0


def test_a_process_cpu_share_is_a_percent_of_one_cpu() -> None:
    # 50 elapsed ticks per CPU in the window; 25 used by the process: half of one CPU.
    assert process_cpu_percent(100, 125, STAT_A, STAT_B) == 50.0
    line = "39 (my (odd) name) S 1 39 39 0 -1 4194560 900 0 0 0 120 30 0 0 20 0 1 0 100 2000 300"
    assert process_ticks(line) == 150


def test_the_sample_splits_into_two_stats_and_per_process_ticks() -> None:
    text = (
        STAT_A + "39 (python3) S 1 39 39 0 -1 0 0 0 0 0 100 0 0 0\n"
        f"{parsers.SAMPLE_MARK}\n" + STAT_B + "39 (python3) S 1 39 39 0 -1 0 0 0 0 0 110 5 0 0\n"
    )
    sample = parse_sample(text)
    assert cpu_percent(sample.stat_a, sample.stat_b) == 30.0
    assert sample.ticks_a == {39: 100}
    assert sample.ticks_b == {39: 115}
    with pytest.raises(ValueError):
        parse_sample(STAT_A)


def test_it_lists_ipv4_addresses_without_loopback_and_finds_their_macs() -> None:
    addresses = parse_ip_addr(IP_ADDR)
    assert [(a["address"], a["prefixlen"], a["dev"]) for a in addresses] == [
        ("10.213.231.11", 16, "eth0"),
        ("10.213.231.10", 16, "eth0"),
        ("192.168.5.7", 24, "eth1"),
    ]
    assert parse_ip_link(IP_LINK) == {"eth0": "02:ef:a2:23:58:e9", "eth1": "0a:00:00:00:00:07"}


def test_ss_gives_one_socket_per_process_with_ipv6_and_wildcards_normalised() -> None:
    sockets = parse_ss(SS)
    assert Socket("0.0.0.0", 8080, 39, "python3") in sockets
    assert Socket("127.0.0.53", 53, 9, "systemd-resolve") in sockets  # scope "%lo" dropped
    assert Socket("::", 9090, 50, "node") in sockets
    assert Socket("0.0.0.0", 80, 70, "apache2") in sockets
    assert Socket("0.0.0.0", 80, 71, "apache2") in sockets
    assert Socket("0.0.0.0", 2024) in sockets  # nobody visible holds it
    assert len(sockets) == 7


def test_proc_net_tcp_gives_listeners_only_with_their_inodes() -> None:
    assert parse_proc_net_tcp(PROC_NET_TCP) == [
        Socket("0.0.0.0", 8080, inode=1136),
        Socket("127.0.0.1", 6379, inode=3203857),
        Socket("10.213.231.11", 22, inode=2001),
    ]
    assert parse_proc_net_tcp(PROC_NET_TCP6) == [
        Socket("::", 9090, inode=3001),
        Socket("::1", 631, inode=3002),
        Socket("127.0.0.1", 8081, inode=3003),  # v4-mapped
        Socket("fe80::ff:c0a8:1", 8082, inode=3004),
    ]


def test_socket_inodes_map_to_every_process_that_holds_them() -> None:
    text = "/proc/39/fd socket:[1136]\n/proc/70/fd socket:[77]\n/proc/71/fd socket:[77]\n/proc/71/fd socket:[77]\n"
    assert parse_socket_owners(text) == {1136: [39], 77: [70, 71]}


def test_environ_masks_secret_names_and_passwords_in_urls() -> None:
    environ = (
        b"NOTES_TITLE=Ops team notes\0DB_PASSWORD=hunter2\0api_key=abc\0GITHUB_TOKEN=t\0"
        b"AWS_SECRET_ACCESS_KEY=s\0MY_CREDENTIALS=c\0DATABASE_URL=postgres://notes:s3cret@db:5432/notes\0"
        b"EQUALS=a=b=c\0EMPTY=\0\0"
    )
    env = parse_environ(environ)
    assert env["NOTES_TITLE"] == "Ops team notes"
    for name in ("DB_PASSWORD", "api_key", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "MY_CREDENTIALS"):
        assert env[name] == MASK
    assert env["DATABASE_URL"] == f"postgres://notes:{MASK}@db:5432/notes"
    assert env["EQUALS"] == "a=b=c"
    assert env["EMPTY"] == ""
    assert "hunter2" not in json.dumps(env) and "s3cret" not in json.dumps(env)


@pytest.mark.parametrize(
    ("exe", "argv", "kind", "evidence"),
    [
        ("/usr/bin/python3.11", ["python3", "/srv/notes/server.py", "--port", "8080"], "python",
         "python3 /srv/notes/server.py"),
        ("/usr/bin/python3.9", ["/usr/bin/python3", "-m", "http.server"], "python", "python3 -m http.server"),
        ("", ["gunicorn", "app:app"], "python", "gunicorn app:app"),
        ("/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
         ["/usr/bin/java", "-Dcatalina.base=/opt/tomcat", "org.apache.catalina.startup.Bootstrap", "start"],
         "tomcat", "java -Dcatalina.base=/opt/tomcat"),
        ("/usr/lib/jvm/java-17-openjdk-amd64/bin/java", ["java", "-Xmx512m", "-jar", "/opt/shop/shop.jar"], "jvm",
         "java -jar /opt/shop/shop.jar"),
        ("/usr/bin/node", ["node", "/opt/shop/server.js"], "node", "node /opt/shop/server.js"),
        ("/usr/bin/nodejs", ["nodejs", "index.js"], "node", "nodejs index.js"),
        ("/usr/sbin/nginx", ["nginx: master process /usr/sbin/nginx -g daemon on;"], "static", "/usr/sbin/nginx"),
        ("", ["nginx: worker process"], "static", "nginx: worker process"),
        ("/usr/sbin/apache2", ["/usr/sbin/apache2", "-k", "start"], "static", "/usr/sbin/apache2"),
        ("/usr/sbin/lighttpd", ["/usr/sbin/lighttpd", "-D", "-f", "/etc/lighttpd/lighttpd.conf"], "static",
         "/usr/sbin/lighttpd"),
        ("/bin/busybox", ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"], "static",
         "busybox httpd -f -p 8080 -h /www"),
        ("/usr/local/bin/myapp", ["/usr/local/bin/myapp", "--serve"], "other", "/usr/local/bin/myapp"),
        ("", [], "other", "unknown executable"),
    ],
)  # fmt: skip
def test_runtime_detection(exe: str, argv: list[str], kind: str, evidence: str) -> None:
    assert detect_runtime(exe, argv) == (kind, evidence)


def _entry(pid: int, port: int, process: str = "app", cwd: str = "/srv/app", runtime: str = "python") -> dict:
    return {"pid": pid, "port": port, "process": process, "cwd": cwd, "runtime": runtime}


def test_the_main_process_is_no_daemon_and_prefers_a_high_port_and_a_working_directory() -> None:
    assert pick_main([_entry(20, 22, "sshd"), _entry(30, 8080, "cron")]) is None
    assert pick_main([_entry(70, 80, "apache2", "/", "static"), _entry(39, 8080)]) == 39
    # A process whose cwd is / loses to one with a real directory on an equally high port.
    assert pick_main([_entry(50, 9090, "node", "/", "node"), _entry(39, 8080)]) == 39
    assert pick_main([_entry(50, 9090, "node", "/", "node")]) == 50
    assert pick_main([{"pid": None, "port": 8080, "process": ""}]) is None


def test_paths_named_in_a_command_line_bare_after_equals_and_in_classpaths() -> None:
    argv = ["java", "-Dcatalina.base=/opt/tomcat", "-cp", "/opt/tomcat/lib/*:/opt/extra", "--port", "80", "/"]
    assert argv_paths(argv) == ["/opt/tomcat", "/opt/tomcat/lib", "/opt/extra", "/"]
    assert argv_paths(["/usr/bin/python3", "/srv/notes/server.py"]) == ["/srv/notes/server.py"]
    assert argv_paths(["app", "--upstream=http://backend:8080/api", "--port", "80"]) == []


def test_candidates_leave_out_system_dirs_and_fold_directories_inside_others() -> None:
    raw = [
        Candidate("/opt/tomcat/bin", "working directory", {7}),
        Candidate("/", "working directory of root"),
        Candidate("/usr/lib/jvm/java-17/bin", "exe"),
        Candidate("/etc/nginx", "config"),
        Candidate("/tmp/x", "scratch"),
        Candidate("/var/lib", "state"),
        Candidate("/var/lib/tomcat9", "CATALINA_BASE", {8}),
        Candidate("/usr/local/shop", "hand-installed"),
        Candidate("/usr/local/bin", "binaries"),
        Candidate("/opt/tomcat", "directory under /opt"),
        Candidate("/opt/tomcat/webapps/", "named in argv", {9}),
        Candidate("/srv/notes/data", "data dir", {1}),
        Candidate("/srv/notes", "directory under /srv"),
        Candidate("/srv/notes/", "duplicate"),
    ]
    merged = merge_candidates(raw)
    assert [c.path for c in merged] == ["/opt/tomcat", "/var/lib/tomcat9", "/usr/local/shop", "/srv/notes"]
    # The outer directory took the rank of what it contains, and says why.
    assert merged[0].reason == "directory under /opt; contains /opt/tomcat/bin (working directory)"
    assert merged[0].pids == {7, 9}
    assert merged[3].pids == {1}
    many = [Candidate(f"/srv/app{i}", "under /srv") for i in range(15)]
    assert len(merge_candidates(many)) == 10


def test_open_files_are_absolute_paths_without_devices_sockets_or_deleted_files() -> None:
    listing = """\
total 0
lrwx------ 1 root root 64 Nov 27 15:16 0 -> /dev/null
l-wx------ 1 root root 64 Nov 27 15:16 1 -> /var/log/notes.log
lrwx------ 1 root root 64 Nov 27 15:16 3 -> socket:[1136]
lr-x------ 1 root root 64 Nov 27 15:16 4 -> /srv/notes/notes.ini
lr-x------ 1 root root 64 Nov 27 15:16 5 -> /srv/notes/old.db (deleted)
lr-x------ 1 root root 64 Nov 27 15:16 6 -> pipe:[99]
lr-x------ 1 root root 64 Nov 27 15:16 7 -> /srv/notes/notes.ini
"""
    assert parse_fd_targets(listing) == ["/var/log/notes.log", "/srv/notes/notes.ini"]


def test_cron_keeps_jobs_not_comments_blank_lines_or_variables() -> None:
    text = (
        "/etc/crontab\0SHELL=/bin/sh\n"
        "/etc/crontab\0# m h dom mon dow user command\n"
        "/etc/crontab\0\n"
        "/etc/crontab\0 17 *\t* * *\troot\tcd / && run-parts --report /etc/cron.hourly\n"
        "/etc/cron.d/notes\0MAILTO = ops\n"
        "/etc/cron.d/notes\x0017 3 * * * root FOO=1 find /srv/notes/data -delete\n"
        "/var/spool/cron/crontabs/bob\0@reboot /home/bob/app1/start.sh\n"
    )
    assert parse_cron(text) == [
        {"source": "/etc/crontab", "line": "17 *\t* * *\troot\tcd / && run-parts --report /etc/cron.hourly"},
        {"source": "/etc/cron.d/notes", "line": "17 3 * * * root FOO=1 find /srv/notes/data -delete"},
        {"source": "/var/spool/cron/crontabs/bob", "line": "@reboot /home/bob/app1/start.sh"},
    ]


def test_services_are_init_scripts_and_systemd_units_with_their_commands() -> None:
    services = parse_services(
        [
            "/etc/init.d/notes",
            "/etc/init.d/README",
            "/etc/systemd/system/shop.service",
            "/etc/systemd/system/notes.service.d/override.conf",
            "/lib/systemd/system/getty@.service",
            "/etc/systemd/system/shop.timer",
        ]
    )
    assert services == [
        {"name": "notes", "kind": "sysv", "path": "/etc/init.d/notes",
         "start": ["/etc/init.d/notes", "start"], "stop": ["/etc/init.d/notes", "stop"]},
        {"name": "shop", "kind": "systemd", "path": "/etc/systemd/system/shop.service",
         "start": ["systemctl", "start", "shop.service"], "stop": ["systemctl", "stop", "shop.service"]},
    ]  # fmt: skip


# --- a fake VM ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Out:
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    truncated: bool = False


@dataclass
class Proc:
    pid: int
    name: str
    argv: list[str]
    cwd: str
    exe: str
    uid: int = 0
    ppid: int = 1
    rss_kb: int = 20480
    env: dict[str, str] = field(default_factory=dict)
    fds: list[str] = field(default_factory=list)
    ticks: tuple[int, int] = (100, 100)


@dataclass
class Listen:
    address: str
    port: int
    inode: int
    pids: list[int]


def _proc_hex(address: str) -> str:
    packed = ipaddress.ip_address(address).packed
    return "".join(packed[i : i + 4][::-1].hex().upper() for i in range(0, len(packed), 4))


class FakeVM:
    """Answers the commands inspect.py sends, from a table of processes and files, as root or as
    the user "shop" (uid 1000). Any script other than the module's constants fails the test."""

    USER_UID = 1000

    def __init__(self, procs: list[Proc], listens: list[Listen], *, root: bool = True) -> None:
        self.procs = {p.pid: p for p in procs}
        self.listens = listens
        self.root = root
        self.missing: set[str] = set()
        self.raising: set[str] = set()
        self.calls: list[tuple[list[str], float, int]] = []
        self.files: dict[str, str] = {
            "/etc/os-release": OS_RELEASE,
            "/proc/meminfo": MEMINFO,
            "/etc/crontab": "SHELL=/bin/sh\n# comment\n17 * * * * root cd / && run-parts /etc/cron.hourly\n",
            "/etc/cron.d/notes": "PATH=/usr/bin:/bin\n17 3 * * * root find /srv/notes/data -name '*.tmp' -delete\n",
            "/var/spool/cron/crontabs/shop": "@reboot /opt/shop/start.sh\n",
            "/etc/init.d/notes": 'APP_DIR=/srv/notes\npython3 "$APP_DIR/server.py"\n',
            "/etc/init.d/ssh": "/usr/sbin/sshd\n",
            "/lib/systemd/system/notes-backup.service": "ExecStart=/usr/bin/tar -czf /backup/n.tgz /srv/notes\n",
            "/etc/systemd/system/shop.service": "ExecStart=/usr/bin/node /opt/shop/server.js\n",
            "/srv/notes/server.py": "print()\n",
            "/srv/notes/notes.ini": "[notes]\n",
            "/srv/notes/static/site.json": "{}\n",
            "/srv/notes/data/notes.log": "",
            "/etc/notes/extra.conf": "",
            "/opt/shop/server.js": "",
            "/opt/shop/.env": "",
        }
        # uid 0 may read these; the user "shop" only those under its own home
        self.private = {"/var/spool/cron/crontabs/shop"}
        self.dirs = {
            "/srv/notes",
            "/srv/notes/data",
            "/srv/notes/static",
            "/opt/shop",
            "/home/bob/app1",
            "/etc/notes",
        }
        self.app_dirs = ["/home/bob/app1", "/opt/shop", "/srv/notes"]
        self.sizes = {"/srv/notes": (3_168_524, 26), "/opt/shop": (52_000, 3), "/home/bob/app1": (4096, 1)}

    # --- plumbing ---

    def __call__(self, argv: list[str], *, timeout: float = 20, max_output: int = 1_000_000) -> Out:
        assert all(isinstance(a, str) for a in argv)
        self.calls.append((list(argv), timeout, max_output))
        if argv[0] in self.raising:
            raise TimeoutError(f"{argv[0]} did not finish within {timeout:g} s; killed")
        handler = getattr(self, f"do_{argv[0]}", None)
        if argv[0] in self.missing or handler is None:
            return Out(127, stderr=f"sh: 1: {argv[0]}: not found\n".encode())
        result: Out = handler(argv[1:])
        if len(result.stdout) > max_output:
            return Out(result.exit_code, result.stdout[:max_output], result.stderr, truncated=True)
        return result

    def may_read(self, path: str) -> bool:
        if self.root:
            return True
        if path in self.private:
            return False
        match = re.match(r"/proc/(\d+)/(environ|cwd|exe|fd)", path)
        return not match or self.procs[int(match[1])].uid == self.USER_UID

    def visible(self, pid: int) -> bool:
        return self.root or self.procs[pid].uid == self.USER_UID

    def proc_file(self, path: str) -> bytes | None:
        match = re.fullmatch(r"/proc/(\d+)/(\w+)", path)
        if not match or int(match[1]) not in self.procs:
            return None
        p = self.procs[int(match[1])]
        if match[2] == "status":
            return f"Name:\t{p.name}\nState:\tS\nPPid:\t{p.ppid}\nUid:\t{p.uid}\t{p.uid}\t{p.uid}\t{p.uid}\nVmRSS:\t{p.rss_kb} kB\n".encode()
        if match[2] == "cmdline":
            return b"".join(a.encode() + b"\0" for a in p.argv)
        if match[2] == "environ":
            return b"".join(f"{k}={v}".encode() + b"\0" for k, v in p.env.items())
        return None

    def stat_line(self, pid: int, index: int) -> str:
        p = self.procs[pid]
        return f"{pid} ({p.name}) S {p.ppid} {pid} {pid} 0 -1 0 0 0 0 0 {p.ticks[index]} 0 0 0 20 0 1 0\n"

    # --- commands ---

    def do_cat(self, args: list[str]) -> Out:
        (path,) = args
        data = self.proc_file(path)
        if data is None and path in self.files:
            data = self.files[path].encode()
        if data is None and path == "/proc/net/tcp":
            data = self.proc_net(False).encode()
        if data is None and path == "/proc/net/tcp6":
            data = self.proc_net(True).encode()
        if data is None:
            return Out(1, stderr=f"cat: {path}: No such file or directory\n".encode())
        if not self.may_read(path):
            return Out(1, stderr=f"cat: {path}: Permission denied\n".encode())
        return Out(0, data)

    def proc_net(self, v6: bool) -> str:
        lines = [
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
        ]
        for i, listen in enumerate(self.listens):
            if (":" in listen.address) != v6:
                continue
            zero = "0" * (32 if v6 else 8)
            lines.append(
                f"{i:4}: {_proc_hex(listen.address)}:{listen.port:04X} {zero}:0000 0A 00000000:00000000 "
                f"00:00000000 00000000     0        0 {listen.inode} 1 0000000000000000 100 0 0 10 0"
            )
        return "\n".join(lines) + "\n"

    def do_readlink(self, args: list[str]) -> Out:
        (path,) = args
        match = re.fullmatch(r"/proc/(\d+)/(cwd|exe)", path)
        if not match or not self.may_read(path):
            return Out(1)  # readlink says nothing without -v
        return Out(0, (getattr(self.procs[int(match[1])], match[2]) + "\n").encode())

    def do_uname(self, args: list[str]) -> Out:
        assert args == ["-n", "-r"]
        return Out(0, b"vmi 6.1.0-18-amd64\n")

    def do_ip(self, args: list[str]) -> Out:
        return Out(0, (IP_ADDR if "addr" in args else IP_LINK).encode())

    def do_ss(self, args: list[str]) -> Out:
        assert args == ["-t", "-l", "-n", "-p"]
        lines = ["State  Recv-Q Send-Q Local Address:Port  Peer Address:PortProcess"]
        for listen in self.listens:
            host = f"[{listen.address}]" if ":" in listen.address else listen.address
            users = ",".join(
                f'("{self.procs[pid].name}",pid={pid},fd=3)' for pid in listen.pids if self.visible(pid)
            )
            lines.append(
                f"LISTEN 0 128 {host}:{listen.port} 0.0.0.0:* " + (f"users:({users})" if users else "")
            )
        return Out(0, ("\n".join(lines) + "\n").encode())

    def do_getent(self, args: list[str]) -> Out:
        names = {0: "root", 1000: "shop", 33: "www-data"}
        lines = [f"{names[int(uid)]}:x:{uid}:{uid}::/:/bin/sh\n" for uid in args[1:] if int(uid) in names]
        return Out(0 if len(lines) == len(args) - 1 else 2, "".join(lines).encode())

    def do_sh(self, args: list[str]) -> Out:
        assert args[0] == "-c" and args[2:3] in ([], ["sh"]), args
        script, values = args[1], args[3:]
        if script == inspect.SAMPLE_SCRIPT:
            pids = [int(v) for v in values]
            first = STAT_A + "".join(self.stat_line(p, 0) for p in pids)
            second = STAT_B + "".join(self.stat_line(p, 1) for p in pids)
            return Out(0, f"{first}{parsers.SAMPLE_MARK}\n{second}".encode())
        if script == inspect.SOCKET_OWNERS_SCRIPT:
            out, err = [], []
            for listen in self.listens:
                for pid in listen.pids:
                    if self.visible(pid):
                        out.append(f"/proc/{pid}/fd socket:[{listen.inode}]\n")
                    else:
                        err.append(f"find: '/proc/{pid}/fd': Permission denied\n")
            return Out(1 if err else 0, "".join(out).encode(), "".join(err).encode())
        if script == inspect.APP_DIRS_SCRIPT:
            return Out(0, "".join(f"{d}\0" for d in self.app_dirs).encode())
        if script == inspect.COUNT_FILES_SCRIPT:
            (path,) = values
            return Out(0, f"{self.sizes.get(path, (0, 0))[1]}\n".encode())
        raise AssertionError(f"a script that is not one of the module's constants: {script!r}")

    def do_du(self, args: list[str]) -> Out:
        assert args[:4] == ["-s", "-b", "--one-file-system", "--"]
        path = args[4]
        return Out(0, f"{self.sizes.get(path, (4096, 0))[0]}\t{path}\n".encode())

    def do_find(self, args: list[str]) -> Out:
        if args[0] == "-H":  # what kind of file each path is
            paths = args[1 : args.index("-maxdepth")]
            out, err = [], []
            for path in paths:
                assert path.startswith("/")
                if path in self.dirs or path in self.files:
                    out.append(f"{'d' if path in self.dirs else 'f'} {path}\0")
                else:
                    err.append(f"find: '{path}': No such file or directory\n")
            return Out(1 if err else 0, "".join(out).encode(), "".join(err).encode())
        directory = args[0]
        assert args[1:6] == ["-maxdepth", "2", "-type", "f", "("]
        names = [args[i + 1] for i, a in enumerate(args) if a == "-name"]
        found = [
            path
            for path in sorted(self.files)
            if path.startswith(directory + "/")
            and path.count("/") - directory.count("/") <= 2
            and any(Path(path).match(n) for n in names)
        ]
        return Out(0, "".join(f"{p}\0" for p in found).encode())

    def do_ls(self, args: list[str]) -> Out:
        assert args[0] == "-l"
        path = args[1]
        pid = int(path.split("/")[2])
        if not self.may_read(path):
            return Out(2, stderr=f"ls: cannot open directory '{path}': Permission denied\n".encode())
        entries = ["/dev/null", *self.procs[pid].fds]
        lines = [f"lrwx------ 1 root root 64 Nov 27 15:16 {i} -> {t}" for i, t in enumerate(entries)]
        return Out(0, ("total 0\n" + "\n".join(lines) + "\n").encode())

    def do_grep(self, args: list[str]) -> Out:
        if "-Z" in args:  # cron
            out, err = [], []
            for path in sorted(self.files):
                if path == "/etc/crontab" or path.startswith(("/etc/cron.d/", "/var/spool/cron/crontabs/")):
                    if not self.may_read(path):
                        err.append(f"grep: {path.rsplit('/', 1)[0]}: Permission denied\n")
                        continue
                    out += [f"{path}\0{line}\n" for line in self.files[path].splitlines()]
            return Out(2 if err else 0, "".join(out).encode(), "".join(err).encode())
        if "-l" in args:  # services
            needles = [args[i + 1] for i, a in enumerate(args) if a == "-e"]
            roots = args[args.index("--") + 1 :]
            hits = [
                path
                for path in sorted(self.files)
                if any(path.startswith(r + "/") for r in roots)
                and any(n in self.files[path] for n in needles)
            ]
            return Out(0 if hits else 1, "".join(f"{h}\n" for h in hits).encode())
        if "-o" in args:  # web server document roots
            return Out(0, b"    root /var/www/shop/public;\n")
        raise AssertionError(f"unexpected grep {args}")


def notes_vm(*, root: bool = True) -> FakeVM:
    """The lab's notes app on 8080 (root), a node shop on IPv6 [::]:9090 with cwd / (user shop),
    sshd, and a resolver on loopback."""
    procs = [
        Proc(
            39, "python3", ["python3", "/srv/notes/server.py", "--port", "8080"], "/srv/notes", "/usr/bin/python3.11",
            env={"NOTES_TITLE": "Ops team notes", "NOTES_DATA": "/srv/notes/data", "DB_PASSWORD": "hunter2"},
            fds=["socket:[1001]", "/srv/notes/data/notes.log", "/etc/notes/extra.conf", "/srv/notes/data",
                 "/var/log/notes.log"],
            ticks=(100, 110),
        ),
        Proc(50, "node", ["node", "/opt/shop/server.js"], "/", "/usr/bin/node", uid=1000,
             env={"NODE_ENV": "production", "SESSION_SECRET": "x"}, fds=["socket:[1004]"]),
        Proc(20, "sshd", ["sshd: /usr/sbin/sshd -D [listener]"], "/", "/usr/sbin/sshd"),
        Proc(9, "systemd-resolve", ["/lib/systemd/systemd-resolved"], "/", "/lib/systemd/systemd-resolved"),
    ]  # fmt: skip
    listens = [
        Listen("0.0.0.0", 8080, 1001, [39]),
        Listen("10.213.231.11", 22, 1002, [20]),
        Listen("127.0.0.53", 53, 1003, [9]),
        Listen("::", 9090, 1004, [50]),
    ]
    return FakeVM(procs, listens, root=root)


def _by_port(report: dict) -> dict[int, dict]:
    return {entry["port"]: entry for entry in report["listening"]}


# --- whole inspections ----------------------------------------------------------------------


def test_a_full_inspection_finds_the_app_its_directory_config_cron_and_service() -> None:
    vm = notes_vm()
    report = inspect_vm(vm, ssh_address="10.213.231.11")
    assert set(report) == SCHEMA
    assert json.loads(json.dumps(report)) == report
    assert report["errors"] == []
    assert report["os"] == {
        "pretty_name": "Debian GNU/Linux 12 (bookworm)",
        "id": "debian",
        "version_id": "12",
        "kernel": "6.1.0-18-amd64",
        "hostname": "vmi",
    }
    assert report["cpu"] == {"count": 2, "used_percent": 30.0}
    assert report["memory"] == {"total_mb": 2000, "available_mb": 1500, "used_mb": 500}
    assert [(a["address"], a["ssh"], a["mac"]) for a in report["addresses"]] == [
        ("10.213.231.11", True, "02:ef:a2:23:58:e9"),
        ("10.213.231.10", False, "02:ef:a2:23:58:e9"),
        ("192.168.5.7", False, "0a:00:00:00:00:07"),
    ]
    # sshd and the loopback-only resolver are not the app's.
    assert sorted(_by_port(report)) == [8080, 9090]
    app = _by_port(report)[8080]
    assert set(app) == LISTENER_KEYS
    assert app | {"env": None, "config_files": None} == {
        "port": 8080, "address": "0.0.0.0", "pid": 39, "process": "python3",
        "argv": ["python3", "/srv/notes/server.py", "--port", "8080"], "cwd": "/srv/notes",
        "exe": "/usr/bin/python3.11", "user": "root", "rss_mb": 20.0, "cpu_percent": 20.0, "runtime": "python",
        "env": None, "config_files": None,
    }  # fmt: skip
    assert report["main_pid"] == 39
    assert report["runtime"] == {"kind": "python", "evidence": "python3 /srv/notes/server.py", "pid": 39}
    assert report["env"] == {
        "NOTES_TITLE": "Ops team notes",
        "NOTES_DATA": "/srv/notes/data",
        "DB_PASSWORD": MASK,
    }
    # Open regular files under /etc or the app's directory, then config-looking files in it.
    assert report["config_files"] == [
        "/srv/notes/data/notes.log",
        "/etc/notes/extra.conf",
        "/srv/notes/notes.ini",
        "/srv/notes/static/site.json",
    ]
    assert report["candidates"][0] == {
        "path": "/srv/notes",
        "size_bytes": 3_168_524,
        "files": 26,
        "reason": "working directory of python3 (pid 39)",
    }
    assert [c["path"] for c in report["candidates"]] == ["/srv/notes", "/opt/shop", "/home/bob/app1"]
    assert {
        "source": "/etc/cron.d/notes",
        "line": "17 3 * * * root find /srv/notes/data -name '*.tmp' -delete",
    } in (report["cron"])
    assert {"source": "/var/spool/cron/crontabs/shop", "line": "@reboot /opt/shop/start.sh"} in report["cron"]
    assert [(s["name"], s["kind"], s["start"], s["stop"]) for s in report["services"]] == [
        ("notes", "sysv", ["/etc/init.d/notes", "start"], ["/etc/init.d/notes", "stop"]),
        ("notes-backup", "systemd", ["systemctl", "start", "notes-backup.service"],
         ["systemctl", "stop", "notes-backup.service"]),
    ]  # fmt: skip
    assert report["duration_s"] >= 0


def test_without_ss_it_reads_proc_net_tcp_and_maps_sockets_to_pids() -> None:
    with_ss = inspect_vm(notes_vm(), ssh_address="10.213.231.11")
    vm = notes_vm()
    vm.missing.add("ss")
    report = inspect_vm(vm, ssh_address="10.213.231.11")
    assert report["errors"] == []
    assert report["listening"] == with_ss["listening"]
    commands = [call[0] for call in vm.calls]
    assert ["cat", "/proc/net/tcp"] in commands
    assert ["cat", "/proc/net/tcp6"] in commands
    assert ["sh", "-c", inspect.SOCKET_OWNERS_SCRIPT] in commands


def test_an_ipv6_listener_is_reported_with_its_address() -> None:
    for missing in ((), ("ss",)):
        vm = notes_vm()
        vm.missing.update(missing)
        shop = _by_port(inspect_vm(vm))[9090]
        assert (shop["address"], shop["pid"], shop["process"], shop["runtime"]) == ("::", 50, "node", "node")
        assert shop["user"] == "shop"
        assert shop["env"] == {"NODE_ENV": "production", "SESSION_SECRET": MASK}


def test_a_process_whose_cwd_is_root_gets_its_directory_from_its_script() -> None:
    report = inspect_vm(notes_vm())
    shop = _by_port(report)[9090]
    assert shop["cwd"] == "/"
    [candidate] = [c for c in report["candidates"] if c["path"] == "/opt/shop"]
    assert candidate["reason"] == "holds /opt/shop/server.js, named by node (pid 50)"
    assert shop["config_files"] == ["/opt/shop/.env"]
    assert all(c["path"] != "/" for c in report["candidates"])


def test_as_a_non_root_user_permission_errors_are_reported_and_nothing_crashes() -> None:
    for missing in ((), ("ss",)):
        vm = notes_vm(root=False)
        vm.missing.update(missing)
        report = inspect_vm(vm, ssh_address="10.213.231.11")
        assert set(report) == SCHEMA
        assert json.loads(json.dumps(report)) == report
        # Root's app is seen only as a port; the user's own process in full.
        app, shop = _by_port(report)[8080], _by_port(report)[9090]
        assert (app["pid"], app["argv"], app["env"]) == (None, [], {})
        assert (shop["pid"], shop["cwd"]) == (50, "/")
        assert report["main_pid"] == 50
        assert any("port 8080" in e and "not root" in e for e in report["errors"]), report["errors"]
        assert any(e.startswith("cron:") and "Permission denied" in e for e in report["errors"])
        assert report["candidates"][0]["path"] == "/opt/shop"
        assert "/srv/notes" in [c["path"] for c in report["candidates"]]  # found under /srv all the same


def test_a_process_that_hides_its_details_leaves_errors_but_a_report() -> None:
    vm = notes_vm()
    vm.private.update({"/proc/39/environ", "/proc/39/cwd", "/proc/39/fd"})
    vm.root = False
    vm.procs[39].uid = 1000  # ours, but /proc is mounted hidepid-like for these
    report = inspect_vm(vm)
    app = _by_port(report)[8080]
    assert (app["env"], app["cwd"]) == ({}, "")
    assert "process 39 (python3): cat: /proc/39/environ: Permission denied" in report["errors"]
    assert "process 39 (python3): readlink /proc/39/cwd failed (exit code 1)" in report["errors"]
    # Its directory still comes from its script's path.
    assert report["candidates"][0]["path"] == "/srv/notes"


def test_without_ip_the_addresses_are_empty_and_it_says_so() -> None:
    vm = notes_vm()
    vm.missing.add("ip")
    report = inspect_vm(vm)
    assert report["addresses"] == []
    assert report["errors"] == ["addresses: ip: command not found"]
    assert _by_port(report)[8080]["pid"] == 39


def test_a_runner_that_raises_is_recorded_and_after_three_in_a_row_it_stops_asking() -> None:
    vm = notes_vm()
    vm.raising.add("uname")
    report = inspect_vm(vm)
    assert report["errors"] == ["os: uname did not finish within 10 s; killed"]
    assert report["os"]["id"] == "debian"

    dead = notes_vm()
    dead.raising.update(["cat", "uname", "ip", "ss", "sh", "find", "grep", "du", "getent", "readlink", "ls"])
    report = inspect_vm(dead)
    assert len(dead.calls) == 3
    assert report["errors"][-1] == "stopped: the VM did not answer three commands in a row"
    assert report["listening"] == [] and report["main_pid"] is None
    assert report["runtime"] == {
        "kind": "other",
        "evidence": "no listening application process found",
        "pid": None,
    }


def test_values_reach_the_vm_only_as_arguments_with_a_deadline_and_a_bound() -> None:
    vm = notes_vm()
    vm.missing.add("ss")
    inspect_vm(vm)
    scripts = {
        inspect.SAMPLE_SCRIPT,
        inspect.SOCKET_OWNERS_SCRIPT,
        inspect.APP_DIRS_SCRIPT,
        inspect.COUNT_FILES_SCRIPT,
    }
    for argv, timeout, max_output in vm.calls:
        if argv[0] == "sh":
            assert argv[2] in scripts  # FakeVM.do_sh refuses any other script as well
        assert 0 < timeout <= 20
        assert 0 < max_output <= 4_000_000
    assert "/srv/notes" not in " ".join(inspect.SAMPLE_SCRIPT + inspect.COUNT_FILES_SCRIPT)


def test_workers_sharing_their_parents_socket_are_left_out_and_docroots_become_candidates() -> None:
    procs = [
        Proc(70, "nginx", ["nginx: master process /usr/sbin/nginx -g daemon on;"], "/", "/usr/sbin/nginx"),
        Proc(71, "nginx", ["nginx: worker process"], "/", "/usr/sbin/nginx", uid=33, ppid=70),
        Proc(72, "nginx", ["nginx: worker process"], "/", "/usr/sbin/nginx", uid=33, ppid=70),
    ]
    vm = FakeVM(procs, [Listen("0.0.0.0", 80, 500, [70, 71, 72]), Listen("::", 80, 501, [70, 71, 72])])
    vm.dirs.add("/var/www/shop/public")
    vm.app_dirs = ["/var/www/shop"]
    report = inspect_vm(vm)
    assert [(e["port"], e["pid"], e["address"]) for e in report["listening"]] == [(80, 70, "0.0.0.0")]
    assert report["main_pid"] == 70
    assert report["runtime"] == {"kind": "static", "evidence": "/usr/sbin/nginx", "pid": 70}
    [candidate] = report["candidates"]
    assert candidate["path"] == "/var/www/shop"
    assert "contains /var/www/shop/public (document root" in candidate["reason"]


def test_tomcat_is_found_through_catalina_base_when_started_from_its_bin_directory() -> None:
    argv = ["/usr/bin/java", "-Djava.util.logging.config.file=/opt/tomcat/conf/logging.properties",
            "-Dcatalina.base=/opt/tomcat", "-classpath", "/opt/tomcat/bin/bootstrap.jar",
            "org.apache.catalina.startup.Bootstrap", "start"]  # fmt: skip
    proc = Proc(
        7, "java", argv, "/opt/tomcat/bin", "/usr/lib/jvm/java-17-openjdk-amd64/bin/java", rss_kb=400_000
    )
    proc.env = {"CATALINA_HOME": "/opt/tomcat", "JAVA_OPTS": "-Xmx512m"}
    vm = FakeVM([proc], [Listen("0.0.0.0", 8080, 600, [7]), Listen("127.0.0.1", 8005, 601, [7])])
    vm.dirs |= {"/opt/tomcat", "/opt/tomcat/bin", "/opt/tomcat/conf"}
    vm.files |= {"/opt/tomcat/conf/logging.properties": "", "/opt/tomcat/bin/bootstrap.jar": "",
                 "/opt/tomcat/conf/server.xml": ""}  # fmt: skip
    vm.app_dirs = ["/opt/tomcat"]
    report = inspect_vm(vm)
    assert [e["port"] for e in report["listening"]] == [8080]  # the shutdown port is loopback-only
    assert report["runtime"]["kind"] == "tomcat"
    assert [c["path"] for c in report["candidates"]] == ["/opt/tomcat"]
    assert "contains /opt/tomcat/bin (working directory of java (pid 7))" in report["candidates"][0]["reason"]
    assert "/opt/tomcat/conf/server.xml" in report["config_files"]
    assert "/opt/tomcat/conf/logging.properties" in report["config_files"]


@pytest.mark.parametrize("path", [inspect.__file__, parsers.__file__])
def test_it_imports_only_the_standard_library(path: str) -> None:
    tree = ast.parse(Path(path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            # The collector's one import of its own: the parsers, held to the same rule.
            assert name.split(".")[0] in sys.stdlib_module_names or name in (
                "__future__",
                parsers.__name__,
            ), name
