"""Inspecting the lab's legacy VM over real SSH: the notes app, its directory, config, cron job,
init script and addresses, as the relocation flow will see them.

The VM is one of this module's own ("vmi"), so the demo's vm1 and other tests' VMs are left alone.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator

import pytest

from apps.hosts.transport import CommandResult, Endpoint, ssh
from apps.lab import fleet
from apps.lab.vm import LegacyVM, vm_down, vm_host_public_key, vm_password, vm_up
from apps.relocations.inspect import inspect_vm

SSH_ADDRESS = "10.213.231.11"
SERVICE_ADDRESS = "10.213.231.10"


@pytest.fixture(scope="module")
def vm() -> Iterator[LegacyVM]:
    vm = LegacyVM(
        config=fleet.LabConfig.from_settings(),
        name="vmi",
        ssh_address=ipaddress.IPv4Address(SSH_ADDRESS),
        service_address=ipaddress.IPv4Address(SERVICE_ADDRESS),
    )
    vm_down(vm)  # whatever a killed earlier run left
    vm_up(vm, log=lambda _: None)
    yield vm
    vm_down(vm)


class PinnedRunner:
    """Runs argv on the VM through the portal's own SSH transport: the VM's host key pinned (as
    read from its disk), the portal's key installed once with root's password, deadlines and
    bounded output as the relocation's inspection has them. `prefix` runs argv through another
    program first (setpriv, to look as a non-root login would)."""

    def __init__(self, vm: LegacyVM, prefix: tuple[str, ...] = ()) -> None:
        self.endpoint = Endpoint(str(vm.ssh_address), 22, "root", vm_host_public_key(vm))
        ssh.install_portal_key(self.endpoint, vm_password(vm))
        self.prefix = prefix
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], *, timeout: float = 20, max_output: int = 1_000_000) -> CommandResult:
        self.calls.append(argv)
        return ssh.run(self.endpoint, [*self.prefix, *argv], timeout=timeout, max_output=max_output)

    def close(self) -> None:
        ssh.drop_session(self.endpoint)


@pytest.fixture(scope="module")
def report(vm: LegacyVM) -> dict:
    run = PinnedRunner(vm)
    try:
        report = inspect_vm(run, ssh_address=SSH_ADDRESS)
    finally:
        run.close()
    print(json.dumps(report, indent=1))  # shown with -s: what the relocation pages get
    print(f"{len(run.calls)} commands in {report['duration_s']} s")
    return report


def test_the_report_is_json_and_complete_without_errors(report: dict) -> None:
    assert json.loads(json.dumps(report)) == report
    assert set(report) == {
        "os", "cpu", "memory", "addresses", "listening", "runtime", "candidates", "config_files",
        "env", "cron", "services", "main_pid", "errors", "duration_s",
    }  # fmt: skip
    assert report["errors"] == []


def test_it_finds_the_notes_app_listening_on_8080(report: dict) -> None:
    [app] = [entry for entry in report["listening"] if entry["port"] == 8080]
    assert app["process"] == "python3"
    assert app["argv"][:2] == ["python3", "/srv/notes/server.py"]
    assert app["cwd"] == "/srv/notes"
    assert app["exe"].startswith("/usr/bin/python3")
    assert app["user"] == "root"
    assert app["rss_mb"] > 1
    assert app["runtime"] == "python"
    assert report["main_pid"] == app["pid"]
    # sshd is how the portal got in; it is not the app's.
    assert all(entry["process"] != "sshd" for entry in report["listening"])


def test_it_says_the_runtime_is_python_and_why(report: dict) -> None:
    assert report["runtime"]["kind"] == "python"
    assert "/srv/notes/server.py" in report["runtime"]["evidence"]
    assert report["runtime"]["pid"] == report["main_pid"]


def test_the_app_directory_comes_first_with_its_data(report: dict) -> None:
    first = report["candidates"][0]
    assert first["path"] == "/srv/notes"
    assert first["files"] > 0
    assert first["size_bytes"] > 1_000_000  # the attachments in data/
    assert all(not c["path"].startswith("/srv/notes/") for c in report["candidates"])


def test_it_finds_the_config_and_the_environment(report: dict) -> None:
    assert "/srv/notes/notes.ini" in report["config_files"]
    assert report["env"]["NOTES_TITLE"] == "Ops team notes"
    assert report["env"]["NOTES_DATA"] == "/srv/notes/data"


def test_it_finds_the_cron_job_and_the_init_script(report: dict) -> None:
    jobs = [job for job in report["cron"] if job["source"] == "/etc/cron.d/notes"]
    assert [job["line"] for job in jobs] == [
        "17 3 * * * root find /srv/notes/data -name '*.tmp' -mtime +1 -delete"
    ]
    [service] = [s for s in report["services"] if s["name"] == "notes"]
    assert service == {
        "name": "notes",
        "kind": "sysv",
        "path": "/etc/init.d/notes",
        "start": ["/etc/init.d/notes", "start"],
        "stop": ["/etc/init.d/notes", "stop"],
    }


def test_it_lists_both_addresses_and_flags_the_ssh_one(report: dict) -> None:
    by_address = {a["address"]: a for a in report["addresses"]}
    assert by_address[SSH_ADDRESS]["ssh"] is True
    assert by_address[SERVICE_ADDRESS]["ssh"] is False
    assert all(a["prefixlen"] == 16 and a["mac"] for a in by_address.values())


def test_it_describes_the_machine(report: dict) -> None:
    assert report["os"]["id"] == "debian"
    assert report["os"]["hostname"] == "vmi"
    assert report["os"]["kernel"]
    assert report["cpu"]["count"] >= 1
    assert 0 <= report["cpu"]["used_percent"] <= 100
    assert 0 < report["memory"]["available_mb"] <= report["memory"]["total_mb"]


def test_as_a_non_root_login_it_reports_what_it_could_not_read(vm: LegacyVM) -> None:
    # The lab unpacks the VM's root from a debootstrap made in a mkdtemp directory, so its "/" is
    # 0700 and no user but root can reach any file. Every real Debian has 0755 there.
    vm.rootfs.chmod(0o755)
    # setpriv drops to nobody on the real VM: the kernel refuses what it would refuse a user.
    run = PinnedRunner(vm, prefix=("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"))
    try:
        report = inspect_vm(run, ssh_address=SSH_ADDRESS)
    finally:
        run.close()
    assert report["os"]["id"] == "debian"
    assert [entry["port"] for entry in report["listening"]] == [8080]
    assert report["listening"][0]["pid"] is None  # root's process: nobody may not see it
    assert report["main_pid"] is None
    assert any("8080" in error for error in report["errors"])
    assert any(c["path"] == "/srv/notes" for c in report["candidates"])
