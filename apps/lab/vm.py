"""The lab's legacy VM: an app running the old way, for the portal to migrate into a container.

A VM here is a network namespace with its own NIC on the lab bridge, a Debian root filesystem
of its own, and its own PID, mount, UTS and IPC namespaces: its init is PID 1, it runs its own
sshd (root logs in with a password, as on many old VMs), cron, and a small web app ("notes")
started by a SysV init script, with its code, config and data files under /srv/notes.

The VM holds two addresses: a management address for SSH, and the service address that the
app's callers know. A migration moves the service address to a container; `vm_restore` puts
things back for the next demo or test.

As in fleet.py, processes are found only by the pidfile this module writes and by the VM's
network namespace, never by name.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from apps.lab import images, vm_files
from apps.lab.fleet import LabConfig, Log, _ensure_bridge, check_prerequisites
from apps.lab.netns import (
    NETNS_DIR,
    LabError,
    alive,
    cmdline,
    daemon_pid,
    descendants,
    link_exists,
    mac,
    pid_from,
    processes_in_netns,
    sh,
    sshd_answers,
    unmount_under,
    wait_for,
)

APP_DIR = "/srv/notes"
BLOB_SIZE = 1 << 20
NOTES = 20
VM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class LegacyVM:
    config: LabConfig
    name: str
    ssh_address: ipaddress.IPv4Address
    service_address: ipaddress.IPv4Address
    data_mb: int = 3
    port: int = 8080

    @property
    def netns(self) -> str:
        return f"{self.config.prefix}-{self.name}"

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def veth(self) -> str:
        return f"{self.config.prefix}-{self.name}"

    @property
    def mac(self) -> str:
        return mac(f"{self.config.prefix}-vm-{self.name}")

    @property
    def state(self) -> Path:
        return self.config.state_dir / self.name

    @property
    def run(self) -> Path:
        return self.config.run_dir / self.name

    @property
    def rootfs(self) -> Path:
        return self.state / "rootfs"

    @property
    def init_pidfile(self) -> Path:
        return self.run / "init.pid"

    @property
    def app_dir(self) -> str:
        """Where the app lives inside the VM."""
        return APP_DIR

    @property
    def password_file(self) -> Path:
        return self.state / "password"

    @property
    def console_log(self) -> Path:
        return self.state / "console.log"

    @property
    def url(self) -> str:
        return f"http://{self.service_address}:{self.port}/"

    def inside(self, path: str) -> Path:
        """The host's path to a file inside the VM (its root filesystem is a plain directory)."""
        return self.rootfs / path.lstrip("/")


def demo_vm(config: LabConfig) -> LegacyVM:
    base = config.subnet.network_address + 100 * 256
    return LegacyVM(config, "vm1", ssh_address=base + 11, service_address=base + 10)


def existing_vms(config: LabConfig) -> list[str]:
    """Names of the VMs that exist now (a namespace, or a run dir with an init pidfile), stale
    ones included, so that `lab down` finds what a killed run left."""
    found: set[str] = set()
    if NETNS_DIR.exists():
        found |= {path.name[len(config.prefix) + 1 :] for path in NETNS_DIR.glob(f"{config.prefix}-vm*")}
    if config.run_dir.exists():
        found |= {path.parent.name for path in config.run_dir.glob("vm*/init.pid")}
    return sorted(found)


def vm_password(vm: LegacyVM) -> str:
    """root's password in the VM: generated once, kept in the VM's state dir (never in git)."""
    with contextlib.suppress(OSError):
        password = vm.password_file.read_text().strip()
        if password:
            return password
    vm.state.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(18)
    try:
        fd = os.open(vm.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another run made it first
        return vm.password_file.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    return password


def vm_host_public_key(vm: LegacyVM) -> str:
    """The VM's ed25519 host key as "type base64", read from its disk (the out-of-band check)."""
    parts = vm.inside("/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
    return f"{parts[0]} {parts[1]}"


# --- up ---------------------------------------------------------------------------------------------


def vm_up(vm: LegacyVM, log: Log = print) -> None:
    """Build or repair the VM; returns once its sshd and its app answer. Idempotent."""
    check_prerequisites()
    vm.state.mkdir(parents=True, exist_ok=True)
    vm.run.mkdir(parents=True, exist_ok=True)
    _ensure_bridge(vm.config)
    _ensure_rootfs(vm, log)
    changed = _ensure_system_files(vm)
    changed |= _ensure_app(vm, log)
    _ensure_data(vm, log)
    _set_password(vm)
    if not vm.netns_path.exists():
        # An init left from before sits in a namespace that is gone; it cannot be reached.
        _stop_init(vm)
    serving = vm.service_address if _ensure_network(vm, log) else vm.ssh_address
    if _init_pid(vm) is not None:
        if not changed and sshd_answers(str(vm.ssh_address)) and _app_answers(vm, serving):
            return
        log(f"{vm.name}: {'files changed' if changed else 'not answering'}; rebooting it")
        _stop_init(vm)
    _boot(vm, log, serving)


def _ensure_rootfs(vm: LegacyVM, log: Log) -> None:
    if vm.inside("/usr/lib/os-release").exists():
        # The tarball's "/" is debootstrap's mkdtemp dir, 0700: no user but root could reach
        # anything in the VM. Also mends a rootfs unpacked before this was done.
        vm.rootfs.chmod(0o755)
        return
    tar = images.debian_vm_tar(vm.config.image_cache, log)
    log(f"{vm.name}: unpacking its root filesystem")
    staging = vm.state / "rootfs.new"
    subprocess.run(["rm", "-rf", "--one-file-system", str(staging)], check=False)
    staging.mkdir(parents=True)
    sh("tar", "--numeric-owner", "-xpf", str(tar), "-C", str(staging), timeout=300)
    subprocess.run(["rm", "-rf", "--one-file-system", str(vm.rootfs)], check=False)
    staging.rename(vm.rootfs)
    vm.rootfs.chmod(0o755)
    _app_stamp(vm).unlink(missing_ok=True)  # a new disk gets the app installed afresh


def _write(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write the file if its content differs; True if it did."""
    if path.exists() and path.read_text() == text and (path.stat().st_mode & 0o7777) == mode:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.lab-new")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.rename(path)
    return True


def _ensure_system_files(vm: LegacyVM) -> bool:
    """The lab's own machinery inside the VM (init, sshd settings, identity), kept current."""
    changed = False
    files = {
        "/sbin/lab-init": (vm_files.LAB_INIT, 0o755),
        "/etc/ssh/sshd_config.d/lab.conf": (_sshd_conf(vm), 0o644),
        "/etc/default/ssh": ('# Written by the Slipway lab.\nSSHD_OPTS="-E /var/log/sshd.log"\n', 0o644),
        "/etc/hostname": (f"{vm.name}\n", 0o644),
        "/etc/hosts": (f"127.0.0.1\tlocalhost\n{vm.ssh_address}\t{vm.name}\n", 0o644),
    }
    for path, (text, mode) in files.items():
        changed |= _write(vm.inside(path), text, mode)
    if not vm.inside("/etc/ssh/ssh_host_ed25519_key").exists():
        # Each VM its own host keys; the cached tarball carries none.
        sh("chroot", str(vm.rootfs), "ssh-keygen", "-A")
        changed = True
    return changed


def _sshd_conf(vm: LegacyVM) -> str:
    return "\n".join(
        [
            "# Written by the Slipway lab: an old VM's habits (root logs in with a password).",
            f"ListenAddress {vm.ssh_address}",
            "PermitRootLogin yes",
            "PasswordAuthentication yes",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "PidFile /run/sshd.pid",
            "",
        ]
    )


def _set_password(vm: LegacyVM) -> None:
    result = subprocess.run(
        ["chroot", str(vm.rootfs), "chpasswd"],
        input=f"root:{vm_password(vm)}\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        raise LabError(f"{vm.name}: chpasswd failed: {result.stderr.strip()}")


def _app_files(vm: LegacyVM) -> dict[str, tuple[str, int]]:
    return {
        f"{APP_DIR}/server.py": (vm_files.NOTES_SERVER, 0o755),
        f"{APP_DIR}/notes.ini": (vm_files.NOTES_INI, 0o644),
        f"{APP_DIR}/static/style.css": (vm_files.NOTES_CSS, 0o644),
        "/etc/init.d/notes": (vm_files.NOTES_INIT.replace("@PORT@", str(vm.port)), 0o755),
        "/etc/cron.d/notes": (vm_files.NOTES_CRON, 0o644),
    }


def _app_stamp(vm: LegacyVM) -> Path:
    return vm.state / "app.sha256"


def _ensure_app(vm: LegacyVM, log: Log) -> bool:
    """The app's files, written when the VM is made or when the lab's version of them changes.
    Otherwise they belong to the VM: what a test or a demo changed there stays."""
    files = _app_files(vm)
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    stamp = _app_stamp(vm)
    if stamp.exists() and stamp.read_text().strip() == digest:
        return False
    log(f"{vm.name}: installing the notes app in {APP_DIR}")
    for path, (text, mode) in files.items():
        _write(vm.inside(path), text, mode)
    (vm.inside(f"{APP_DIR}/data")).mkdir(parents=True, exist_ok=True)
    # Started at runlevels 2-5 and stopped at 0, 1 and 6, as update-rc.d would link it.
    for level in "0123456":
        link = vm.inside(f"/etc/rc{level}.d") / ("S02notes" if level in "2345" else "K01notes")
        if not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("../init.d/notes")
    stamp.write_text(digest + "\n")
    return True


def _ensure_data(vm: LegacyVM, log: Log) -> None:
    """data_mb files of 1 MiB of pseudo-random bytes, the same on every build, and small notes."""
    data = vm.inside(f"{APP_DIR}/data")
    data.mkdir(parents=True, exist_ok=True)
    for index in range(1, NOTES + 1):
        note = data / f"note-{index:02d}.txt"
        if not note.exists():
            note.write_text(_note_text(index))
    want = {f"attachment-{index:03d}.bin" for index in range(vm.data_mb)}
    have = {path.name: path.stat().st_size for path in data.glob("attachment-*.bin")}
    if set(have) == want and all(size == BLOB_SIZE for size in have.values()):
        return
    log(f"{vm.name}: writing {vm.data_mb} MB of data files")
    for name in have:
        (data / name).unlink()
    for index in range(vm.data_mb):
        (data / f"attachment-{index:03d}.bin").write_bytes(random.Random(index).randbytes(BLOB_SIZE))  # noqa: S311


WORDS = ["backup", "deploy", "restart", "disk", "cron", "proxy", "upgrade", "invoice", "ticket", "logs"]
WORDS += ["quota", "firewall", "mirror", "release", "rollback", "patch", "kernel", "alert", "archive"]


def _note_text(index: int) -> str:
    rng = random.Random(f"note-{index}")  # noqa: S311 - demo content, deterministic on purpose
    lines = [f"Note {index}: {' '.join(rng.choices(WORDS, k=3))}", ""]
    for _ in range(rng.randint(3, 8)):
        lines.append("- " + " ".join(rng.choices(WORDS, k=rng.randint(4, 10))))
    return "\n".join(lines) + "\n"


def _ensure_network(vm: LegacyVM, log: Log) -> bool:
    """The VM's NIC and addresses; False if its service address is held elsewhere."""
    if not vm.netns_path.exists():
        # A namespace file can vanish while its veth lives on in the root namespace.
        if link_exists(vm.veth):
            sh("ip", "link", "del", vm.veth)
        sh("ip", "netns", "add", vm.netns)
    ns = vm.netns
    if not link_exists("eth0", netns=ns):
        if link_exists(vm.veth):
            sh("ip", "link", "del", vm.veth)
        sh("ip", "link", "add", vm.veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    sh("ip", "link", "set", vm.veth, "master", vm.config.bridge)
    sh("ip", "link", "set", vm.veth, "up")
    sh("ip", "link", "set", "lo", "up", netns=ns)
    sh("ip", "link", "set", "eth0", "address", vm.mac, netns=ns)
    # Deleting the primary address (a migration takes the service address away) must not take
    # the others with it; and a VM on the public segment forwards nothing.
    settings = (
        "echo 1 > /proc/sys/net/ipv4/conf/eth0/promote_secondaries; echo 0 > /proc/sys/net/ipv4/ip_forward"
    )
    sh("sh", "-c", settings, netns=ns)
    sh("ip", "link", "set", "eth0", "up", netns=ns)
    # The management address first, so it is the primary one and the source of outgoing traffic.
    prefix = vm.config.subnet.prefixlen
    sh("ip", "addr", "replace", f"{vm.ssh_address}/{prefix}", "dev", "eth0", netns=ns)
    sh("ip", "route", "replace", "default", "via", str(vm.config.portal_ip), netns=ns)
    if _has_service_address(vm):
        return True
    # After a migration the address belongs to a container: taking it back here would put it
    # twice on the segment. vm_restore is the deliberate way back.
    if _address_in_use(vm, vm.service_address):
        log(
            f"{vm.name}: {vm.service_address} answers from another machine (a migrated app?); "
            "leaving it there: vm_restore takes it back"
        )
        return False
    sh("ip", "addr", "add", f"{vm.service_address}/{prefix}", "dev", "eth0", netns=ns)
    return True


def _has_service_address(vm: LegacyVM) -> bool:
    shown = sh("ip", "-o", "-4", "addr", "show", "dev", "eth0", netns=vm.netns).stdout
    return f" {vm.service_address}/" in shown


def _address_in_use(vm: LegacyVM, address: ipaddress.IPv4Address) -> bool:
    """An ARP probe from the VM's NIC (RFC 5227: sender 0.0.0.0, so no neighbour learns from it)."""
    result = sh(
        "python3", "-c", vm_files.ARP_PROBE, "eth0", vm.mac, str(address), check=False, netns=vm.netns
    )
    if result.returncode not in (0, 1):
        raise LabError(f"{vm.name}: ARP probe for {address} failed: {result.stderr.strip()}")
    return result.returncode == 1


def _boot(vm: LegacyVM, log: Log, serving: ipaddress.IPv4Address) -> None:
    log(f"{vm.name}: booting (ssh {vm.ssh_address}, service {vm.service_address}:{vm.port})")
    unmount_under(vm.rootfs)  # the VM's mounts live in its own namespace; none belong here
    boot = vm.run / "boot.sh"
    boot.write_text(vm_files.BOOT_SCRIPT)
    argv = [
        "nsenter",
        f"--net={vm.netns_path}",
        "unshare",
        "--pid",
        "--fork",
        # unshare blocks SIGTERM while it waits; if it is killed, its child (the VM's PID 1)
        # gets SIGKILL, and with PID 1 the whole PID namespace goes.
        "--kill-child",
        "--mount",
        "--uts",
        "--ipc",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        str(boot),
        str(vm.rootfs),
        vm.name,
    ]
    with open(vm.console_log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            env={"PATH": VM_PATH},  # nothing of the caller's environment reaches the VM
            start_new_session=True,  # outlives `manage.py lab up`
        )
    vm.init_pidfile.write_text(f"{proc.pid}\n")
    wait_for(lambda: sshd_answers(str(vm.ssh_address)), 30, f"{vm.name}: sshd", vm.console_log)
    wait_for(
        lambda: _app_answers(vm, serving), 30, f"{vm.name}: the notes app", vm.inside("/var/log/notes.log")
    )


# --- processes ------------------------------------------------------------------------------------


def _init_pid(vm: LegacyVM) -> int | None:
    """The VM's outer process (unshare, in the VM's network namespace), if it runs."""
    return daemon_pid(vm.init_pidfile, str(vm.rootfs), vm.netns_path)


def _pid1(outer: int) -> int | None:
    """The VM's PID 1 as this machine numbers it: the child of the outer process."""
    try:
        children = Path(f"/proc/{outer}/task/{outer}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children and alive(int(children[0])) else None


def vm_init_pid(vm: LegacyVM) -> int | None:
    """The VM's PID 1 (this machine's number for it), if the VM runs."""
    outer = _init_pid(vm)
    return _pid1(outer) if outer is not None else None


def _stop_init(vm: LegacyVM, grace: float = 15.0) -> None:
    # No namespace check: the init of a VM whose namespace was deleted must go too.
    outer = pid_from(vm.init_pidfile)
    if outer is not None and any(str(vm.rootfs) in part for part in cmdline(outer)):
        pid1 = _pid1(outer)
        if pid1 is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid1, signal.SIGTERM)  # lab-init stops its services and exits
        deadline = time.monotonic() + grace
        while alive(outer) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(outer):
            with contextlib.suppress(ProcessLookupError):
                os.kill(outer, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while alive(outer) and time.monotonic() < deadline:
                time.sleep(0.05)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(outer, os.WNOHANG)  # not a zombie of ours, if this process booted it
    vm.init_pidfile.unlink(missing_ok=True)


def _kill_leftovers(vm: LegacyVM) -> None:
    """Whatever still runs in the VM's network namespace, by namespace and parentage."""
    roots = processes_in_netns(vm.netns_path)
    victims = descendants(roots) + roots
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(pid) for pid in victims):
        time.sleep(0.05)


def vm_exec(
    vm: LegacyVM, *argv: str, check: bool = True, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a command inside the VM (all its namespaces, its root), as its console would."""
    pid1 = vm_init_pid(vm)
    if pid1 is None:
        raise LabError(f"{vm.name} is not running; `manage.py lab up` starts it")
    command = [
        "nsenter",
        f"--target={pid1}",
        "--mount",
        "--uts",
        "--ipc",
        "--net",
        "--pid",
        "--root",
        "--wd",
        "--",
        "/usr/bin/env",
        "-i",
        f"PATH={VM_PATH}",
        "LANG=C.UTF-8",
        "HOME=/root",
        *argv,
    ]
    result = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise LabError(
            f"{vm.name}: {' '.join(argv)} failed ({result.returncode}): "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    return result


def _app_answers(vm: LegacyVM, address: ipaddress.IPv4Address | None = None) -> bool:
    conn = http.client.HTTPConnection(str(address or vm.service_address), vm.port, timeout=2)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        return response.status == 200 and response.read().strip() == b"ok"
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


# --- restore, keys, down, status -------------------------------------------------------------------


def vm_restore(vm: LegacyVM, timeout: float = 20) -> None:
    """After a migration (demo or test): the service address back on eth0 and the app started
    through its init script, if they are not. The app's files are left as they are."""
    if _init_pid(vm) is None:
        raise LabError(f"{vm.name} is not running; `manage.py lab up` starts it")
    if not _has_service_address(vm):
        prefix = vm.config.subnet.prefixlen
        sh("ip", "addr", "add", f"{vm.service_address}/{prefix}", "dev", "eth0", netns=vm.netns)
        # Neighbours may still send the address to where a migration had put it: the VM
        # announces it, as `arping -U` would on a real one.
        vm_exec(vm, "python3", "-c", vm_files.GARP, "eth0", str(vm.service_address))
    if vm_exec(vm, "/etc/init.d/notes", "status", check=False).returncode != 0:
        vm_exec(vm, "/etc/init.d/notes", "start")
    wait_for(lambda: _app_answers(vm), timeout, f"{vm.name}: the notes app", vm.inside("/var/log/notes.log"))


def vm_rotate_host_key(vm: LegacyVM) -> None:
    """New ssh host keys for the VM, and its sshd restarted to offer them."""
    for key in vm.inside("/etc/ssh").glob("ssh_host_*"):
        key.unlink()
    sh("chroot", str(vm.rootfs), "ssh-keygen", "-A")
    if _init_pid(vm) is not None:
        vm_exec(vm, "/etc/init.d/ssh", "restart")
        wait_for(lambda: sshd_answers(str(vm.ssh_address)), 20, f"{vm.name}: sshd")


def vm_down(vm: LegacyVM, purge: bool = False) -> None:
    _stop_init(vm)
    _kill_leftovers(vm)
    if vm.netns_path.exists():
        sh("ip", "netns", "del", vm.netns, check=False)
    if link_exists(vm.veth):
        sh("ip", "link", "del", vm.veth, check=False)
    shutil.rmtree(vm.run, ignore_errors=True)
    if purge:
        unmount_under(vm.state)
        subprocess.run(["rm", "-rf", "--one-file-system", str(vm.state)], check=False)


def vms_down(config: LabConfig, log: Log = print, purge: bool = False) -> None:
    """Remove every VM there is, the demo's, the tests' and stale ones alike."""
    for name in existing_vms(config):
        log(f"{name}: removing")
        # Taking a VM down needs only its name; its addresses go with its namespace.
        unspecified = ipaddress.IPv4Address(0)
        vm_down(LegacyVM(config, name, unspecified, unspecified), purge=purge)


def vm_status(vm: LegacyVM) -> dict[str, bool]:
    netns = vm.netns_path.exists()
    return {
        "netns": netns,
        "init": netns and vm_init_pid(vm) is not None,
        "sshd": netns and sshd_answers(str(vm.ssh_address)),
        "app": netns and _app_answers(vm),
    }


# --- what goes inside the VM ------------------------------------------------------------------------
