"""hostagent.lxcfs without a real LXCFS: mountinfo parsing, the binds offered, the refusals."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hostagent import lxcfs, serve

AGENT_PARENT = Path(__file__).resolve().parents[2]

MOUNTINFO = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
163 27 0:52 / {root} rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other
170 27 0:60 / /mnt/with\\040space rw,relatime - fuse.lxcfs lxcfs rw
171 27 0:61 / /mnt/other rw,relatime - fuse.sshfs host:/ rw
"""


def _fake_lxcfs(root: Path, files: tuple[str, ...]) -> None:
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("MemTotal: 1 kB\n")


def test_it_parses_mount_points_types_and_sources_from_mountinfo() -> None:
    mounts = lxcfs.parse_mountinfo(MOUNTINFO.format(root="/var/lib/lxcfs"))
    assert mounts[1] == lxcfs.Mount("/var/lib/lxcfs", "fuse.lxcfs", "lxcfs")
    assert mounts[2].mount_point == "/mnt/with space"
    assert mounts[3].fstype == "fuse.sshfs"


def test_it_skips_lines_that_are_not_mountinfo() -> None:
    assert lxcfs.parse_mountinfo("garbage\n\n1 2 3 - x\n") == []


def test_it_finds_lxcfs_only_where_it_is_mounted_and_only_lxcfs() -> None:
    text = MOUNTINFO.format(root="/var/lib/lxcfs")
    assert lxcfs.mount_point("/var/lib/lxcfs", text) == "/var/lib/lxcfs"
    assert lxcfs.mount_point("/var/lib/lxcfs/", text) == "/var/lib/lxcfs"
    assert lxcfs.mount_point("/mnt/with space", text) == "/mnt/with space"
    assert lxcfs.mount_point("/mnt/other", text) == ""  # FUSE, but not LXCFS
    assert lxcfs.mount_point("/var/lib", text) == ""


def test_binds_list_only_the_files_present_as_host_and_container_paths(tmp_path: Path) -> None:
    _fake_lxcfs(tmp_path, ("proc/meminfo", "proc/cpuinfo", "proc/uptime", "proc/slabinfo"))
    binds = lxcfs.binds(str(tmp_path), MOUNTINFO.format(root=tmp_path))
    assert binds == [
        (f"{tmp_path}/proc/meminfo", "/proc/meminfo"),
        (f"{tmp_path}/proc/cpuinfo", "/proc/cpuinfo"),
        (f"{tmp_path}/proc/uptime", "/proc/uptime"),
    ]


def test_binds_include_the_online_cpus_when_lxcfs_offers_them(tmp_path: Path) -> None:
    _fake_lxcfs(tmp_path, lxcfs.FILES)
    binds = dict(lxcfs.binds(str(tmp_path), MOUNTINFO.format(root=tmp_path)))
    assert binds[f"{tmp_path}/sys/devices/system/cpu/online"] == "/sys/devices/system/cpu/online"
    assert len(binds) == len(lxcfs.FILES)


def test_it_offers_no_binds_from_a_directory_that_is_not_an_lxcfs_mount(tmp_path: Path) -> None:
    _fake_lxcfs(tmp_path, lxcfs.FILES)
    assert lxcfs.binds(str(tmp_path), MOUNTINFO.format(root="/var/lib/lxcfs")) == []
    assert lxcfs.binds(str(tmp_path)) == []  # this machine's own mountinfo


def test_facts_report_a_missing_lxcfs_as_not_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    facts = lxcfs.facts(str(tmp_path / "lxcfs"))
    assert facts["running"] is False
    assert facts["mount"] == ""
    assert facts["files"] == [] and facts["broken"] == [] and facts["binds"] == []
    assert facts["stale"] == []
    assert "unreachable" in facts["stale_error"]


def test_the_root_comes_from_the_environment_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(lxcfs.ROOT_ENV, raising=False)
    assert lxcfs.default_root() == "/var/lib/lxcfs"
    monkeypatch.setenv(lxcfs.ROOT_ENV, "/srv/lxcfs")
    assert lxcfs.default_root() == "/srv/lxcfs"


def test_heal_refuses_while_lxcfs_itself_is_down(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="not mounted and answering"):
        lxcfs.heal(str(tmp_path))


def test_heal_is_an_agent_command_on_the_command_line_and_in_serve(tmp_path: Path) -> None:
    assert serve.COMMANDS["lxcfs-heal"] is lxcfs.heal
    result = subprocess.run(
        ["/usr/bin/python3", "-S", "-E", "-m", "hostagent", "lxcfs-heal", "--root", str(tmp_path)],
        cwd=AGENT_PARENT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "hostagent lxcfs-heal: LXCFS is not mounted" in result.stderr


def test_the_check_document_carries_lxcfs_facts_for_the_root_in_the_environment(tmp_path: Path) -> None:
    result = subprocess.run(
        ["/usr/bin/python3", "-S", "-E", "-m", "hostagent", "check"],
        cwd=AGENT_PARENT,
        capture_output=True,
        text=True,
        timeout=30,
        env={
            "DOCKER_HOST": "unix:///nonexistent/docker.sock",
            "PATH": "/usr/bin:/bin",
            lxcfs.ROOT_ENV: str(tmp_path),
        },
    )
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)["lxcfs"]
    assert facts["root"] == str(tmp_path)
    assert facts["running"] is False
