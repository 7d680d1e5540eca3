"""The lab fleet: several Docker hosts on this machine, each a network namespace with its own
dockerd, sshd and hostagent, on one bridged "public" segment.

Everything here is idempotent. `up` repairs whatever a killed or half-finished run left
(namespaces, links, daemons found by their pidfiles, mounts); `down` removes it all. Daemons are
found only by the pidfiles this module writes and by the network namespaces it made, never by
process name.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from apps.hosts import agent, gateway
from apps.lab import images, netns
from apps.lab.netns import NETNS_DIR, LabError
from hostagent.stats import cgroup_mounts

Log = Callable[[str], None]
BASE_DIR = Path(settings.BASE_DIR)


@dataclass(frozen=True)
class LabConfig:
    prefix: str
    subnet: ipaddress.IPv4Network
    hosts: int
    state_dir: Path
    run_dir: Path
    image_cache: Path
    images: tuple[str, ...] = ("busybox", "debian-python")

    @classmethod
    def from_settings(cls, hosts: int | None = None) -> LabConfig:
        return cls(
            prefix=settings.LAB_PREFIX,
            subnet=ipaddress.IPv4Network(settings.LAB_SUBNET),
            hosts=hosts if hosts is not None else settings.LAB_HOSTS,
            state_dir=Path(settings.LAB_STATE_DIR),
            run_dir=Path(settings.LAB_RUN_DIR),
            image_cache=Path(settings.LAB_IMAGE_CACHE),
        )

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br0"

    @property
    def bridge_mac(self) -> str:
        # Fixed and locally administered: a bridge left to pick its lowest port MAC changes
        # address as ports come and go, and its neighbours lose it.
        return netns.mac(f"{self.prefix}-bridge")

    @property
    def anchor_pidfile(self) -> Path:
        """A process that only waits, in this machine's mount namespace: what the hosts'
        stand-in systemctl enters it by (pid 1's namespaces are not readable here)."""
        return self.run_dir / "anchor.pid"

    @property
    def anchor_file(self) -> Path:
        return self.run_dir / "mount-anchor"

    @property
    def portal_ip(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 1

    def host(self, index: int) -> LabHost:
        return LabHost(self, index)

    def all_hosts(self) -> list[LabHost]:
        return [self.host(i) for i in range(1, self.hosts + 1)]

    def existing_hosts(self) -> list[LabHost]:
        """Hosts that exist now, even beyond `hosts` (a previous run with --hosts 3)."""
        found = set(range(1, self.hosts + 1))
        if NETNS_DIR.exists():
            for path in NETNS_DIR.glob(f"{self.prefix}-h*"):
                suffix = path.name[len(self.prefix) + 2 :]
                if suffix.isdigit():
                    found.add(int(suffix))
        for path in self.run_dir.glob("h*") if self.run_dir.exists() else []:
            if path.name[1:].isdigit():
                found.add(int(path.name[1:]))
        return [self.host(i) for i in sorted(found)]


@dataclass(frozen=True)
class LabHost:
    config: LabConfig
    index: int

    @property
    def name(self) -> str:
        return (
            f"lab-{self.config.prefix}-h{self.index}" if self.config.prefix != "slw" else f"lab-h{self.index}"
        )

    @property
    def netns(self) -> str:
        return f"{self.config.prefix}-h{self.index}"

    @property
    def veth(self) -> str:
        return f"{self.config.prefix}-h{self.index}"

    @property
    def address(self) -> ipaddress.IPv4Address:
        return self.config.subnet.network_address + 10 + self.index

    @property
    def mac(self) -> str:
        return netns.mac(f"{self.config.prefix}-host-{self.index}")

    @property
    def state(self) -> Path:
        return self.config.state_dir / f"h{self.index}"

    @property
    def run(self) -> Path:
        return self.config.run_dir / f"h{self.index}"

    @property
    def docker_socket(self) -> Path:
        return self.run / "docker.sock"

    @property
    def docker_pidfile(self) -> Path:
        return self.run / "docker.pid"

    @property
    def sshd_pidfile(self) -> Path:
        return self.run / "sshd.pid"

    @property
    def sshd_config(self) -> Path:
        return self.state / "sshd_config"

    @property
    def host_key_path(self) -> Path:
        return self.state / "ssh" / "ssh_host_ed25519_key"

    @property
    def lxcfs_dir(self) -> Path:
        """Where this host's LXCFS is mounted (a real host's is /var/lib/lxcfs)."""
        return self.state / "lxcfs"

    @property
    def lxcfs_pidfile(self) -> Path:
        return self.run / "lxcfs.pid"

    @property
    def docker_config(self) -> Path:
        """This host's daemon.json (a real host's is /etc/docker/daemon.json)."""
        return self.state / "daemon.json"

    @property
    def service_ctl(self) -> Path:
        """The host's stand-in for systemctl (see _service_ctl_text)."""
        return self.state / "servicectl"

    @property
    def agent_dir(self) -> Path:
        return self.state / "agent"

    @property
    def volume_root(self) -> Path:
        # All lab hosts share this machine's filesystem, so each has its own volume root.
        return self.state / "volumes"

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    def host_public_key(self) -> str:
        parts = (self.host_key_path.with_suffix(".pub")).read_text().split()
        return f"{parts[0]} {parts[1]}"


# --- small process helpers -------------------------------------------------------------------


def _docker_answers(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(2)
            conn.connect(str(sock))
            conn.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b"200 OK" in conn.recv(256)
    except OSError:
        return False


def docker_cli() -> str:
    # Debian's docker.io client matches its daemon; prefer it over any other on PATH.
    for candidate in ("/usr/bin/docker", shutil.which("docker") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise LabError("the docker client is not installed: apt-get install docker.io")


def docker(
    host: LabHost, *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return netns.sh(docker_cli(), "-H", f"unix://{host.docker_socket}", *args, check=check, timeout=timeout)


# --- prerequisites ---------------------------------------------------------------------------------


REQUIRED = {
    "dockerd": "docker.io",
    "sshd": "openssh-server",
    "ip": "iproute2",
    "nsenter": "util-linux",
    "timeout": "coreutils",
    "lxcfs": "lxcfs",
}


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab builds network namespaces and daemons: run it as root")
    missing = []
    for binary, package in REQUIRED.items():
        if not (shutil.which(binary) or Path(f"/usr/sbin/{binary}").exists()):
            missing.append(f"{binary} (apt-get install {package})")
    if missing:
        raise LabError("missing: " + ", ".join(missing) + "; `make up` installs them")


# --- up ---------------------------------------------------------------------------------------------


def up(config: LabConfig, log: Log = print, load_images: bool = True) -> list[LabHost]:
    """The lab's hosts, built or repaired. With `load_images` the lab loads the v1 base images
    itself (tests and the bench, which drive hosts without the portal's Prepare); `manage.py
    lab up` leaves that to Prepare, as on a real server."""
    check_prerequisites()
    config.state_dir.mkdir(parents=True, exist_ok=True)
    config.run_dir.mkdir(parents=True, exist_ok=True)
    authorized = config.state_dir / "authorized_keys"
    authorized.write_text(gateway.portal_public_key() + "\n")
    authorized.chmod(0o600)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir

    _ensure_bridge(config)
    _ensure_anchor(config)
    hosts = config.all_hosts()
    for host in hosts:
        _ensure_host_network(host)
        _ensure_dockerd(host, log)
        _ensure_lxcfs(host, log)  # after dockerd: a dockerd restart kills what runs in the namespace
        _ensure_sshd(host, log)  # the agent: installed by the portal's probe, as on a real host
    for key in config.images if load_images else ():
        spec = images.IMAGES[key]
        built = images.archive(key, config.image_cache, log)
        for host in hosts:
            have = docker(host, "image", "inspect", "-f", "{{.Id}}", spec.reference, check=False)
            if have.stdout.strip() != built.digest:
                log(f"{host.name}: loading {spec.reference}")
                docker(host, "image", "load", "-q", "-i", str(built.path))
    # Hosts beyond --hosts from an earlier, larger run go away.
    for host in config.existing_hosts():
        if host.index > config.hosts:
            log(f"{host.name}: not wanted any more, removing")
            _remove_host(host, purge=False)
    return hosts


def _ensure_anchor(config: LabConfig) -> None:
    marker = str(config.anchor_file)
    pid = netns.pid_from(config.anchor_pidfile)
    if (
        pid
        and any(marker in part for part in netns.cmdline(pid))
        and netns.ns_inode(Path(f"/proc/{pid}/ns/mnt")) == netns.ns_inode(Path("/proc/self/ns/mnt"))
    ):
        return
    _stop_daemon(config.anchor_pidfile, marker)
    config.anchor_file.touch()
    anchor = subprocess.Popen(
        ["tail", "-f", marker],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    config.anchor_pidfile.write_text(f"{anchor.pid}\n")


def _ensure_bridge(config: LabConfig) -> None:
    if not netns.link_exists(config.bridge):
        netns.sh("ip", "link", "add", config.bridge, "type", "bridge")
    netns.sh("ip", "link", "set", config.bridge, "address", config.bridge_mac)
    netns.sh("ip", "addr", "replace", f"{config.portal_ip}/{config.subnet.prefixlen}", "dev", config.bridge)
    netns.sh("ip", "link", "set", config.bridge, "up")


def _ensure_host_network(host: LabHost) -> None:
    if not host.netns_path.exists():
        # A namespace file can vanish while its veth lives on in the root namespace.
        if netns.link_exists(host.veth):
            netns.sh("ip", "link", "del", host.veth)
        netns.sh("ip", "netns", "add", host.netns)
    if not netns.link_exists("eth0", netns=host.netns):
        if netns.link_exists(host.veth):
            netns.sh("ip", "link", "del", host.veth)
        netns.sh("ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
    netns.sh("ip", "link", "set", host.veth, "master", host.config.bridge)
    netns.sh("ip", "link", "set", host.veth, "up")
    ns = host.netns
    netns.sh("ip", "link", "set", "lo", "up", netns=ns)
    netns.sh("ip", "link", "set", "eth0", "address", host.mac, netns=ns)
    netns.sh(
        "ip", "addr", "replace", f"{host.address}/{host.config.subnet.prefixlen}", "dev", "eth0", netns=ns
    )
    netns.sh("ip", "link", "set", "eth0", "up", netns=ns)
    netns.sh("ip", "route", "replace", "default", "via", str(host.config.portal_ip), netns=ns)


def _stop_daemon(pidfile: Path, marker: str) -> None:
    pid = netns.pid_from(pidfile)
    if pid is not None and any(marker in part for part in netns.cmdline(pid)):
        netns.terminate(pid)
    pidfile.unlink(missing_ok=True)


def _dockerd_argv(host: LabHost) -> list[str]:
    return [
        "dockerd",
        "--data-root",
        str(host.state / "docker"),
        "--exec-root",
        str(host.run / "exec"),
        "--host",
        f"unix://{host.docker_socket}",
        "--pidfile",
        str(host.docker_pidfile),
        "--config-file",
        str(host.docker_config),
        "--storage-driver",
        "overlay2",
        "--cgroup-parent",
        cgroup_parent(host),
        # A host on a bridged public network forwards nothing (a stopped container's traffic
        # would flood the segment); dockerd would otherwise turn forwarding on at every start.
        "--ip-forward=false",
        "--log-level",
        "warn",
    ]


# The lab's hosts stand for other machines, but share this one's cores with the portal. Their
# daemons (dockerd with containerd and the containers, sshd with the agent, LXCFS) must not take
# the CPU from the portal's own processes (web, database), as they could not on a portal machine
# of their own: a fleet-wide scale then loads the lab, not the pages. Nice alone does not do it:
# the containers run in cgroups of their own, each weighed like a nice-0 process, and a fleet of
# many daemons' threads at nice 10 still outweighs one page. So the whole lab runs in one CPU
# cgroup weighed like a quarter of one nice-0 process, however much runs in it: its daemons in
# `daemons`, each host's containers in a group named after the host (dockerd's --cgroup-parent).
# Within the lab the daemons keep nice 10, below the containers they start.
HOST_NICE = 10
NICE = ("nice", "-n", str(HOST_NICE))
LAB_CGROUP = "slipway-lab"
LAB_CPU_SHARES = 256  # cgroup v1 cpu.shares; a nice-0 process weighs 1024


def _cpu_hierarchy() -> Path | None:
    """Where this machine's cgroup v1 cpu controller is mounted whole. On cgroup v2 (or
    without the controller) the lab runs unweighed: its daemons only at nice 10."""
    cpu = cgroup_mounts(refresh=True).v1.get("cpu")
    return Path(cpu.point) if cpu is not None and cpu.root == "/" else None


def _lab_cgroup() -> Path | None:
    """The lab's CPU group (made and weighed), or None where there is none to make."""
    hierarchy = _cpu_hierarchy()
    if hierarchy is None:
        return None
    group = hierarchy / LAB_CGROUP
    (group / "daemons").mkdir(parents=True, exist_ok=True)
    shares = group / "cpu.shares"
    if shares.read_text().strip() != str(LAB_CPU_SHARES):
        shares.write_text(f"{LAB_CPU_SHARES}\n")
    return group


def cgroup_parent(host: LabHost) -> str:
    """The cgroup the host's containers are made under (dockerd's --cgroup-parent)."""
    return f"/{LAB_CGROUP}/{host.netns}" if _cpu_hierarchy() is not None else f"/{host.netns}"


def container_cgroup(host: LabHost, container_id: str, controller: str) -> Path:
    """A container's cgroup directory for a v1 controller (tests read its limits there)."""
    mount = cgroup_mounts(refresh=True).v1[controller]
    return Path(mount.point) / cgroup_parent(host).lstrip("/") / container_id


def _low(argv: list[str]) -> list[str]:
    """argv run as a lab daemon: at HOST_NICE, in the lab's CPU group (it moves itself there
    before exec, so all it starts is there from the first moment)."""
    group = _lab_cgroup()
    if group is None:
        return [*NICE, *argv]
    procs = str(group / "daemons" / "cgroup.procs")
    return [*NICE, "sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *argv]


def _cpu_cgroup_of(pid: int | str) -> str | None:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return path
    return None


def _lower_tree(pid: int) -> None:
    """A daemon an older lab started at the portal's priority and in its CPU group, with
    everything under it: to HOST_NICE and into the lab's group. Its containers stay in their
    own groups (those hold their CPU limits)."""
    group = _lab_cgroup()
    own = _cpu_cgroup_of("self")
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            if os.getpriority(os.PRIO_PROCESS, current) < HOST_NICE:
                os.setpriority(os.PRIO_PROCESS, current, HOST_NICE)
            if group is not None and _cpu_cgroup_of(current) == own:
                (group / "daemons" / "cgroup.procs").write_text(f"{current}\n")
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue  # it ended meanwhile


def _ensure_dockerd(host: LabHost, log: Log) -> None:
    marker = str(host.run / "exec")
    argv = _dockerd_argv(host)
    pid = netns.daemon_pid(host.docker_pidfile, marker, host.netns_path)
    # A daemon started with other flags (an older lab) is restarted with the current ones.
    if pid and netns.cmdline(pid)[: len(argv)] == argv and _docker_answers(host.docker_socket):
        _lower_tree(pid)  # started by an older lab, at the portal's priority
        return
    log_file = host.state / "dockerd.log"
    for attempt in (1, 2):
        log(f"{host.name}: starting dockerd")
        _stop_daemon(host.docker_pidfile, marker)
        _kill_leftovers(host, keep_sshd=True)
        netns.unmount_under(host.run / "exec", host.state / "docker")
        host.run.mkdir(parents=True, exist_ok=True)
        (host.state / "docker").mkdir(parents=True, exist_ok=True)
        host.volume_root.mkdir(parents=True, exist_ok=True)
        host.docker_socket.unlink(missing_ok=True)
        if not host.docker_config.exists():
            # As a fresh Debian install: no daemon.json; the portal writes one on ops' word.
            host.docker_config.write_text("{}\n")
        with open(log_file, "ab") as out:
            subprocess.Popen(
                _low(["nsenter", f"--net={host.netns_path}", *argv]),
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives `manage.py lab up`
            )
        try:
            netns.wait_for(lambda: _docker_answers(host.docker_socket), 60, f"{host.name}: dockerd", log_file)
            return
        except LabError:
            # Seen once after the machine's processes were all killed: dockerd gave up waiting
            # for its containerd. A second start from a clean slate has always come up.
            if attempt == 2:
                raise
            log(f"{host.name}: dockerd did not come up; cleaning up and trying once more")


def _lxcfs_answers(host: LabHost) -> bool:
    if "fuse.lxcfs" not in netns.mount_types(host.lxcfs_dir):
        return False
    try:
        # ENOTCONN once its daemon is gone; a stat can still answer from the attribute cache.
        with open(host.lxcfs_dir / "proc" / "meminfo", "rb") as handle:
            handle.read(1)
    except OSError:
        return False
    return True


def _ensure_lxcfs(host: LabHost, log: Log) -> None:
    marker = str(host.lxcfs_dir)
    pid = netns.daemon_pid(host.lxcfs_pidfile, marker, host.netns_path)
    if pid and _lxcfs_answers(host):
        _lower_tree(pid)
        return
    log(f"{host.name}: starting lxcfs")
    _stop_daemon(host.lxcfs_pidfile, marker)
    _unmount_lxcfs(host)
    host.lxcfs_dir.mkdir(parents=True, exist_ok=True)
    if not netns.mount_types(host.lxcfs_dir):
        # A shared mount point under LXCFS: sshd's mount namespace (the agent's view of the host)
        # is a slave of this one, so every later LXCFS mount and unmount reaches it.
        netns.sh("mount", "--bind", marker, marker)
        netns.sh("mount", "--make-shared", marker)
    argv = ["lxcfs", "--foreground", "--pidfile", str(host.lxcfs_pidfile), marker]
    log_file = host.state / "lxcfs.log"
    with open(log_file, "ab") as out:
        subprocess.Popen(
            _low(["nsenter", f"--net={host.netns_path}", *argv]),
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    netns.wait_for(lambda: _lxcfs_answers(host), 20, f"{host.name}: lxcfs", log_file)


def _unmount_lxcfs(host: LabHost) -> None:
    # A killed LXCFS leaves its mount behind, dead (ENOTCONN); a new one cannot mount over it.
    for _ in range(5):
        if "fuse.lxcfs" not in netns.mount_types(host.lxcfs_dir):
            return
        netns.sh("umount", "-l", str(host.lxcfs_dir), check=False)


def _kill_leftovers(host: LabHost, keep_sshd: bool = False) -> None:
    """Processes still in the host's namespace after its daemons are gone (containerd, shims and
    their containers from a killed run), found by namespace and parentage, never by name.
    With keep_sshd, the host's sshd and its sessions (the portal's connections) are spared."""
    roots = netns.processes_in_netns(host.netns_path)
    spared: set[int] = set()
    if keep_sshd:
        sshd = netns.daemon_pid(host.sshd_pidfile, str(host.sshd_config), host.netns_path)
        if sshd is not None:
            spared = {sshd, *netns.descendants([sshd])}
    victims = [pid for pid in netns.descendants(roots) + roots if pid not in spared]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(netns.alive(pid) for pid in victims):
        time.sleep(0.05)


def _sshd_config_text(host: LabHost) -> str:
    # The lab hosts share this machine's /etc: settings the agent persists go to their own dir.
    env = (
        f"DOCKER_HOST=unix://{host.docker_socket} SLIPWAY_LXCFS_ROOT={host.lxcfs_dir} "
        f"SLIPWAY_SYSCTL_DIR={host.state / 'sysctl.d'} SLIPWAY_DOCKER_CONFIG={host.docker_config} "
        f"SLIPWAY_SERVICE_CTL={host.service_ctl}"
    )
    return "\n".join(
        [
            f"ListenAddress {host.address}:22",
            f"HostKey {host.host_key_path}",
            f"PidFile {host.sshd_pidfile}",
            f"AuthorizedKeysFile {host.config.state_dir / 'authorized_keys'}",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            # The lab's files live under root-owned dirs that are not 0700 all the way.
            "StrictModes no",
            "PrintMotd no",
            "MaxSessions 64",
            "MaxStartups 64:30:128",
            f"SetEnv {env}",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )


def _service_ctl_text(host: LabHost) -> str:
    """The host's stand-in for systemctl: what the agent asks of it for dockerd and LXCFS, done as
    `up` does it, in this machine's mount namespace (sshd, which runs the agent, has its own) and
    the host's network namespace. A restart stops only the daemon: unlike `up`, it leaves the
    containers' processes alone, so live-restore can keep them."""
    q = shlex.quote
    anchor = q(str(host.config.anchor_pidfile))
    into = f'nsenter --mount=/proc/"$(cat {anchor})"/ns/mnt --net={q(str(host.netns_path))} --'
    docker_pid, sock = q(str(host.docker_pidfile)), q(str(host.docker_socket))
    lxcfs_pid, lxcfs_dir = q(str(host.lxcfs_pidfile)), str(host.lxcfs_dir)
    lxcfs_argv = ["lxcfs", "--foreground", "--pidfile", str(host.lxcfs_pidfile), lxcfs_dir]
    return f"""#!/bin/sh
# {host.name}'s stand-in for systemctl (the lab's namespaces have no systemd). Written by the lab.
set -u
gone() {{ [ "$(cut -d' ' -f3 /proc/$1/stat 2>/dev/null || echo Z)" = Z ]; }}  # or a zombie
stop() {{
  pid=$(cat "$1" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || return 0
  n=0
  until gone "$pid"; do
    n=$((n + 1)); [ $n -le 300 ] || {{ echo "$pid did not stop within 30 s" >&2; exit 1; }}
    sleep 0.1
  done
}}
case "$*" in
"reload docker") kill -HUP "$(cat {docker_pid})" ;;
"restart docker")
  stop {docker_pid}
  rm -f {sock}
  setsid -f {into} {shlex.join(_dockerd_argv(host))} >>{q(str(host.state / "dockerd.log"))} 2>&1 </dev/null
  n=0
  until [ -S {sock} ]; do
    n=$((n + 1)); [ $n -le 600 ] || {{ echo "dockerd did not start within 60 s" >&2; exit 1; }}
    sleep 0.1
  done ;;
"enable lxcfs") ;;
"restart lxcfs")
  stop {lxcfs_pid}
  n=0  # a killed LXCFS leaves its mount behind, dead; a new one cannot mount over it
  while [ $n -lt 5 ] && {into} grep -q " {lxcfs_dir} .*- fuse.lxcfs " /proc/self/mountinfo; do
    {into} umount -l {q(lxcfs_dir)}; n=$((n + 1))
  done
  setsid -f {into} {shlex.join(lxcfs_argv)} >>{q(str(host.state / "lxcfs.log"))} 2>&1 </dev/null ;;
*) echo "{host.name}: the lab's servicectl knows reload/restart docker, enable/restart lxcfs, not: $*" >&2
   exit 1 ;;
esac
"""


def _own_sysfs(pid: int) -> bool:
    """Whether the process runs in a mount namespace of its own (the lab gives sshd one)."""
    return netns.ns_inode(Path(f"/proc/{pid}/ns/mnt")) != netns.ns_inode(Path("/proc/self/ns/mnt"))


def _ensure_sshd(host: LabHost, log: Log) -> None:
    if not host.host_key_path.exists():
        host.host_key_path.parent.mkdir(parents=True, exist_ok=True)
        netns.sh(
            "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", str(host.host_key_path)
        )
    host.service_ctl.write_text(_service_ctl_text(host))
    host.service_ctl.chmod(0o755)
    text = _sshd_config_text(host)
    changed = not host.sshd_config.exists() or host.sshd_config.read_text() != text
    marker = str(host.sshd_config)
    running = netns.daemon_pid(host.sshd_pidfile, marker, host.netns_path)
    if (
        running
        and not changed
        and _own_sysfs(running)
        and "fuse.lxcfs"
        in netns.mount_types(host.lxcfs_dir, running)  # an sshd from before the lab had LXCFS
        and netns.mount_types(Path(agent.root()), running)  # ... or before the agent path
        and netns.sshd_answers(str(host.address))
    ):
        _lower_tree(running)
        return
    log(f"{host.name}: starting sshd")
    _stop_daemon(host.sshd_pidfile, marker)
    host.sshd_config.write_text(text)
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    netns.sh(sshd, "-t", "-f", marker)
    # What runs over SSH (the agent) must see the host as a real host would: /sys/class/net
    # of its own network namespace. sshd gets a mount namespace with a sysfs mounted from
    # inside the host's network namespace, and the real cgroup tree moved back under it. The
    # namespace is a slave, not private: later mounts on the host (LXCFS restarts) reach it.
    keep = host.run / "cgroup"
    keep.mkdir(parents=True, exist_ok=True)
    # Each lab host has its own agent directory, seen where the portal installs the agent on
    # every host (HOSTAGENT_ROOT): the lab hosts share this machine's filesystem.
    host.agent_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(
        host.agent_dir / "hostagent", ignore_errors=True
    )  # the lab's own copy, before the portal installed it
    Path(agent.root()).mkdir(parents=True, exist_ok=True)
    q = shlex.quote
    script = "; ".join(
        [
            "set -e",
            f"mount --rbind /sys/fs/cgroup {q(str(keep))}",
            "mount -t sysfs sysfs /sys",
            f"mount --move {q(str(keep))} /sys/fs/cgroup",
            f"mount --bind {q(str(host.agent_dir))} {q(agent.root())}",
            f"exec {q(sshd)} -f {q(marker)} -E {q(str(host.state / 'sshd.log'))}",
        ]
    )
    # sshd daemonizes itself and writes its pidfile.
    netns.sh(
        *_low(["unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", script]), netns=host.netns
    )
    netns.wait_for(
        lambda: netns.sshd_answers(str(host.address)), 20, f"{host.name}: sshd", host.state / "sshd.log"
    )


def down(config: LabConfig, log: Log = print, purge: bool = False) -> None:
    from apps.lab.registry import stop as registry_stop  # registry.py and vm.py build on this module
    from apps.lab.vm import vms_down

    vms_down(config, log, purge=purge)
    registry_stop(config)  # it listens on the bridge's address
    for host in config.existing_hosts():
        log(f"{host.name}: removing")
        _remove_host(host, purge=purge)
    if netns.link_exists(config.bridge):
        netns.sh("ip", "link", "del", config.bridge)
    _stop_daemon(config.anchor_pidfile, str(config.anchor_file))
    if purge:
        shutil.rmtree(config.state_dir, ignore_errors=True)
    shutil.rmtree(config.run_dir, ignore_errors=True)


def _remove_host(host: LabHost, purge: bool) -> None:
    _stop_daemon(host.sshd_pidfile, str(host.sshd_config))
    _stop_daemon(host.docker_pidfile, str(host.run / "exec"))
    _stop_daemon(host.lxcfs_pidfile, str(host.lxcfs_dir))  # on SIGTERM LXCFS unmounts itself
    _kill_leftovers(host)
    _unmount_lxcfs(host)
    netns.unmount_under(host.run, host.state)
    if host.netns_path.exists():
        netns.sh("ip", "netns", "del", host.netns, check=False)
    if netns.link_exists(host.veth):
        netns.sh("ip", "link", "del", host.veth, check=False)
    shutil.rmtree(host.run, ignore_errors=True)
    if purge:
        subprocess.run(["rm", "-rf", "--one-file-system", str(host.state)], check=False)


# --- status -----------------------------------------------------------------------------------------


@dataclass
class HostStatus:
    host: LabHost
    netns: bool
    docker: bool
    sshd: bool
    images: dict[str, bool]
    lxcfs: bool = False

    @property
    def healthy(self) -> bool:
        return self.netns and self.docker and self.sshd and self.lxcfs and all(self.images.values())


def status(config: LabConfig) -> list[HostStatus]:
    out = []
    for host in config.existing_hosts():
        has_netns = host.netns_path.exists()
        docker_up = _docker_answers(host.docker_socket)
        present = {}
        for key in config.images:
            ref = images.IMAGES[key].reference
            present[ref] = docker_up and docker(host, "image", "inspect", ref, check=False).returncode == 0
        sshd = has_netns and netns.sshd_answers(str(host.address))
        lxcfs = netns.daemon_pid(host.lxcfs_pidfile, str(host.lxcfs_dir), host.netns_path) is not None
        out.append(HostStatus(host, has_netns, docker_up, sshd, present, lxcfs and _lxcfs_answers(host)))
    return out


def stop_sshd(host: LabHost) -> None:
    """Stop one host's sshd (tests use it to make a host unreachable); `up` brings it back."""
    _stop_daemon(host.sshd_pidfile, str(host.sshd_config))


def stop_dockerd(host: LabHost) -> None:
    _stop_daemon(host.docker_pidfile, str(host.run / "exec"))
