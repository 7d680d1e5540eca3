"""The lab's legacy VM, with real traffic: HTTP to its app, SSH as root with its password, its
own PID namespace and init, and `vm_restore` after a migration took the app or its address away.

The tests use a VM of their own ("vmt"), so the demo's vm1 is left alone."""

from __future__ import annotations

import dataclasses
import http.client
import ipaddress
import os
import random
import signal
import socket
import time
from collections.abc import Iterator

import paramiko
import pytest

from apps.lab import fleet, netns
from apps.lab.vm import (
    LegacyVM,
    existing_vms,
    vm_down,
    vm_host_public_key,
    vm_init_pid,
    vm_password,
    vm_restore,
    vm_rotate_host_key,
    vm_status,
    vm_up,
)


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def test_vm() -> Iterator[LegacyVM]:
    vm = LegacyVM(
        fleet.LabConfig.from_settings(),
        "vmt",
        ssh_address=ipaddress.IPv4Address("10.213.230.11"),
        service_address=ipaddress.IPv4Address("10.213.230.10"),
    )
    vm_down(vm)  # whatever a killed earlier run left
    vm_up(vm, log=quiet)
    yield vm
    vm_down(vm)


@pytest.fixture
def vm(test_vm: LegacyVM) -> LegacyVM:
    """The test VM, healthy: a test that failed half-way leaves nothing broken for the next."""
    vm_up(test_vm, log=quiet)
    return test_vm


def get(address: ipaddress.IPv4Address, port: int, path: str, timeout: float = 5) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(str(address), port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def answers(vm: LegacyVM, address: ipaddress.IPv4Address | None = None) -> bool:
    try:
        return get(address or vm.service_address, vm.port, "/healthz", timeout=1) == (200, b"ok\n")
    except OSError:
        return False


def offered_key(vm: LegacyVM) -> str:
    transport = paramiko.Transport((str(vm.ssh_address), 22))
    try:
        transport.get_security_options().key_types = ["ssh-ed25519"]
        transport.start_client(timeout=10)
        key = transport.get_remote_server_key()
        return f"{key.get_name()} {key.get_base64()}"
    finally:
        transport.close()


def ssh(vm: LegacyVM, command: str, password: str | None = None) -> tuple[int, str]:
    """Run a command in the VM over SSH as root, after checking the key the VM offers against
    the one on its disk (the out-of-band check)."""
    transport = paramiko.Transport((str(vm.ssh_address), 22))
    try:
        transport.get_security_options().key_types = ["ssh-ed25519"]
        transport.start_client(timeout=10)
        key = transport.get_remote_server_key()
        assert f"{key.get_name()} {key.get_base64()}" == vm_host_public_key(vm)
        transport.auth_password("root", password if password is not None else vm_password(vm))
        channel = transport.open_session(timeout=10)
        channel.settimeout(30)
        channel.exec_command(command)
        output = channel.makefile("rb").read().decode()
        return channel.recv_exit_status(), output
    finally:
        transport.close()


def test_the_app_serves_its_index_and_data_files_on_the_service_address(vm: LegacyVM) -> None:
    status, body = get(vm.service_address, vm.port, "/")
    assert status == 200
    page = body.decode()
    assert "<h1>Ops team notes</h1>" in page  # NOTES_TITLE from the init script
    assert "Shared notes and files of the ops team" in page  # the greeting in notes.ini
    for name in ("attachment-000.bin", f"attachment-{vm.data_mb - 1:03d}.bin", "note-01.txt", "note-20.txt"):
        assert f'href="/data/{name}"' in page
    assert f"attachment-{vm.data_mb:03d}.bin" not in page

    # Data files are the same bytes on every build.
    status, blob = get(vm.service_address, vm.port, "/data/attachment-002.bin")
    assert status == 200
    assert blob == random.Random(2).randbytes(1 << 20)
    status, note = get(vm.service_address, vm.port, "/data/note-01.txt")
    assert status == 200 and note.startswith(b"Note 1: ")
    assert get(vm.service_address, vm.port, "/static/style.css")[0] == 200
    assert get(vm.service_address, vm.port, "/data/../notes.ini")[0] == 404
    assert get(vm.service_address, vm.port, "/data/missing.txt")[0] == 404
    # It listens on every address, the management one too.
    assert answers(vm, vm.ssh_address)


def test_root_logs_in_with_the_password_and_finds_the_vm_own_init_and_the_app_files(vm: LegacyVM) -> None:
    code, cmdline = ssh(vm, "cat /proc/1/cmdline")
    assert code == 0
    assert cmdline.split("\0")[:2] == ["/bin/sh", "/sbin/lab-init"]
    code, listing = ssh(vm, f"hostname; ls {vm.app_dir}/data")
    assert code == 0
    lines = listing.split()
    assert lines[0] == "vmt"
    assert {"attachment-000.bin", "note-01.txt", "note-20.txt"} <= set(lines[1:])
    code, out = ssh(vm, "/etc/init.d/notes status; cat /etc/cron.d/notes")
    assert code == 0 and "notes is running" in out and "/srv/notes/data" in out
    # Other users reach the system too (root's own login says nothing about that).
    code, out = ssh(vm, f"setpriv --reuid=65534 --regid=65534 --clear-groups cat {vm.app_dir}/notes.ini")
    assert code == 0 and "greeting" in out


def test_a_wrong_password_is_refused(vm: LegacyVM) -> None:
    with pytest.raises(paramiko.AuthenticationException):
        ssh(vm, "true", password="not-" + vm_password(vm))


def test_the_password_is_made_once_and_kept_private(vm: LegacyVM) -> None:
    assert vm_password(vm) == vm_password(vm) == vm.password_file.read_text().strip()
    assert len(vm_password(vm)) >= 20
    assert vm.password_file.stat().st_mode & 0o777 == 0o600


def test_stopping_the_app_closes_its_port_and_restore_starts_it_again_without_touching_its_files(
    vm: LegacyVM,
) -> None:
    server = vm.inside(f"{vm.app_dir}/server.py")
    before = (server.stat().st_mtime_ns, server.read_bytes())
    code, _ = ssh(vm, "/etc/init.d/notes stop")
    assert code == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((str(vm.service_address), vm.port), timeout=2).close()
    assert ssh(vm, "/etc/init.d/notes status")[0] == 3
    assert not vm_status(vm)["app"]

    vm_restore(vm)
    assert answers(vm)
    assert ssh(vm, "/etc/init.d/notes status")[0] == 0
    assert (server.stat().st_mtime_ns, server.read_bytes()) == before


def test_restore_puts_the_service_address_back_after_a_migration_took_it(vm: LegacyVM) -> None:
    prefix = vm.config.subnet.prefixlen
    code, _ = ssh(vm, f"ip addr del {vm.service_address}/{prefix} dev eth0")
    assert code == 0
    assert not answers(vm)
    assert answers(vm, vm.ssh_address)  # the management address stays

    vm_restore(vm)
    assert answers(vm)
    code, shown = ssh(vm, "ip -4 -o addr show dev eth0")
    assert f" {vm.service_address}/{prefix} " in shown


@pytest.fixture
def squatter(vm: LegacyVM) -> Iterator[str]:
    """A bare network namespace on the lab bridge, to hold an address as a migrated app would."""
    squat = dataclasses.replace(vm, name="vmtx")  # a "vm" name, so `lab down` finds leftovers
    vm_down(squat)
    netns.sh("ip", "netns", "add", squat.netns)
    netns.sh("ip", "link", "add", squat.veth, "type", "veth", "peer", "name", "eth0", "netns", squat.netns)
    netns.sh("ip", "link", "set", squat.veth, "master", vm.config.bridge)
    netns.sh("ip", "link", "set", squat.veth, "up")
    netns.sh("ip", "link", "set", "eth0", "up", netns=squat.netns)
    yield squat.netns
    vm_down(squat)


def test_lab_up_leaves_the_service_address_where_a_migration_put_it(vm: LegacyVM, squatter: str) -> None:
    prefix = vm.config.subnet.prefixlen
    address = f"{vm.service_address}/{prefix}"
    assert ssh(vm, f"ip addr del {address} dev eth0")[0] == 0
    netns.sh("ip", "addr", "add", address, "dev", "eth0", netns=squatter)

    logged: list[str] = []
    vm_up(vm, log=logged.append)
    assert any("answers from another machine" in line for line in logged), logged
    assert f" {address} " not in ssh(vm, "ip -4 -o addr show dev eth0")[1]
    assert answers(vm, vm.ssh_address)

    netns.sh("ip", "addr", "del", address, "dev", "eth0", netns=squatter)
    vm_restore(vm)
    assert answers(vm)


def test_restore_refuses_a_vm_that_is_not_running(vm: LegacyVM) -> None:
    stopped = dataclasses.replace(vm, name="vmt-none")
    with pytest.raises(netns.LabError, match="not running"):
        vm_restore(stopped)


def test_rotating_the_host_key_makes_sshd_offer_a_new_one(vm: LegacyVM) -> None:
    before = offered_key(vm)
    assert before == vm_host_public_key(vm)
    vm_rotate_host_key(vm)
    after = offered_key(vm)
    assert after != before
    assert after == vm_host_public_key(vm)
    assert ssh(vm, "true")[0] == 0  # still logs in, against the new key


def test_another_data_size_rewrites_only_the_data_files(vm: LegacyVM) -> None:
    server = vm.inside(f"{vm.app_dir}/server.py")
    ini = vm.inside(f"{vm.app_dir}/notes.ini")
    before = (server.stat().st_mtime_ns, ini.stat().st_mtime_ns)
    data = vm.inside(f"{vm.app_dir}/data")
    try:
        vm_up(dataclasses.replace(vm, data_mb=5), log=quiet)
        assert len(list(data.glob("attachment-*.bin"))) == 5
        assert (data / "attachment-004.bin").read_bytes() == random.Random(4).randbytes(1 << 20)
        assert (server.stat().st_mtime_ns, ini.stat().st_mtime_ns) == before
        assert "attachment-004.bin" in get(vm.service_address, vm.port, "/")[1].decode()
    finally:
        vm_up(vm, log=quiet)
    assert len(list(data.glob("attachment-*.bin"))) == vm.data_mb


def test_lab_up_reboots_a_vm_whose_init_was_killed(vm: LegacyVM) -> None:
    pid1 = vm_init_pid(vm)
    assert pid1 is not None
    os.kill(pid1, signal.SIGKILL)  # as the OOM killer would; the PID namespace goes with it
    deadline = time.monotonic() + 5
    while vm_status(vm)["init"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert vm_status(vm) == {"netns": True, "init": False, "sshd": False, "app": False}

    vm_up(vm, log=quiet)
    assert vm_status(vm) == {"netns": True, "init": True, "sshd": True, "app": True}
    assert vm_init_pid(vm) != pid1


def test_vm_down_leaves_no_namespace_no_link_and_no_process(vm: LegacyVM) -> None:
    assert "vmt" in existing_vms(vm.config)
    processes = netns.processes_in_netns(vm.netns_path)
    assert len(processes) >= 4  # unshare, init, sshd, cron, the app

    vm_down(vm)
    assert not vm.netns_path.exists()
    assert not netns.link_exists(vm.veth)
    assert not any(netns.alive(pid) for pid in processes)
    assert "vmt" not in existing_vms(vm.config)
    assert vm_status(vm) == {"netns": False, "init": False, "sshd": False, "app": False}
    assert not answers(vm)
