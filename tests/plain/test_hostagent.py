"""hostagent runs on any host's python3: standard library only, one JSON document."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hostagent import info
from hostagent.protocol import AGENT_VERSION

AGENT_DIR = Path(__file__).resolve().parents[2] / "hostagent"


def test_it_imports_only_the_standard_library() -> None:
    for path in AGENT_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "hostagent", f"{path.name} imports {name}"


def test_info_runs_on_the_system_python_without_site_packages() -> None:
    # -S: no site-packages at all, as on a bare host; -E: ignore PYTHON* variables.
    result = subprocess.run(
        ["/usr/bin/python3", "-S", "-E", "-m", "hostagent", "info"],
        cwd=AGENT_DIR.parent,
        capture_output=True,
        text=True,
        timeout=30,
        env={"DOCKER_HOST": "unix:///nonexistent/docker.sock", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["agent_version"] == AGENT_VERSION
    assert document["cpus"] >= 1
    assert document["memory_bytes"] > 64 * 1024 * 1024
    assert document["cgroup_version"] in (1, 2)
    assert document["docker"]["reachable"] is False
    assert "nonexistent" in document["docker"]["error"] or "No such file" in document["docker"]["error"]


def test_an_unknown_command_exits_non_zero_with_usage() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hostagent", "format-disk"],
        cwd=AGENT_DIR.parent,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_cgroup_version_reads_the_mounted_hierarchy(tmp_path: Path) -> None:
    assert info.cgroup_version(str(tmp_path)) == 1
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    assert info.cgroup_version(str(tmp_path)) == 2


def test_memory_is_read_from_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        2048 kB\nMemFree:  1 kB\n")
    assert info.memory_bytes(str(meminfo)) == 2048 * 1024
    meminfo.write_text("MemFree:  1 kB\n")
    with pytest.raises(ValueError, match="no MemTotal"):
        info.memory_bytes(str(meminfo))


def test_a_docker_host_that_is_not_a_unix_socket_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    facts = info.docker_facts()
    assert facts["reachable"] is False
    assert "only unix:// sockets" in facts["error"]


def test_serve_answers_one_json_line_per_request_until_eof() -> None:
    import io

    from hostagent import serve

    requests = "\n".join(
        [
            json.dumps({"id": 1, "cmd": "ping"}),
            "not json",
            json.dumps({"id": 3, "cmd": "format-disk"}),
            json.dumps({"id": 4, "cmd": "garp", "args": {"address": "192.0.2.77"}}),
            json.dumps({"id": 5, "cmd": "garp", "args": {"nonsense": 1}}),
        ]
    )
    out = io.StringIO()
    assert serve.serve(io.StringIO(requests + "\n"), out) == 0
    replies = [json.loads(line) for line in out.getvalue().splitlines()]
    assert replies[0] == {"id": 1, "ok": True, "result": {"agent_version": AGENT_VERSION}}
    assert replies[1]["ok"] is False and "bad request" in replies[1]["error"]
    assert (
        replies[2]["ok"] is False
        and "'arp-probe', 'check', 'docker-settings', 'doctor', 'fix-network', 'garp', 'garp-for'"
        in replies[2]["error"]
    )
    # No interface here holds that address: refused with the reason, nothing sent.
    assert replies[3] == {
        "id": 4,
        "ok": False,
        "error": "no interface holds 192.0.2.77 in that network namespace",
    }
    assert replies[4]["ok"] is False and "nonsense" in replies[4]["error"]


def test_garp_for_refuses_a_malformed_mac_before_sending_anything() -> None:
    from hostagent import arp

    with pytest.raises(ValueError, match="not a MAC address"):
        arp.garp_for("public", "192.0.2.77", "02:00:zz")
    with pytest.raises(ValueError, match="not a MAC address"):
        arp.garp_for("public", "192.0.2.77", "02:00:00:00:00")


def test_the_bundle_the_portal_installs_is_the_same_bytes_every_time_and_runs_on_plain_python(
    tmp_path: Path,
) -> None:
    from apps.hosts import agent

    agent.bundle.cache_clear()
    first = agent.bundle()
    agent.bundle.cache_clear()
    assert agent.bundle() == first
    assert first.name == f"v{AGENT_VERSION}-{first.build}" and len(first.build) == 12
    pyz = tmp_path / "hostagent.pyz"
    pyz.write_bytes(first.data)
    said = subprocess.run(
        ["/usr/bin/python3", "-S", "-E", str(pyz), "--version"], capture_output=True, text=True
    )
    assert said.stdout.strip() == f"hostagent {AGENT_VERSION}", said.stderr
    info = subprocess.run(["/usr/bin/python3", "-S", "-E", str(pyz), "info"], capture_output=True, text=True)
    assert json.loads(info.stdout)["agent_version"] == AGENT_VERSION, info.stderr


def test_the_doctor_finds_swap_accounting_on_cgroup_v1_and_on_a_recorded_v2_host(tmp_path: Path) -> None:
    from hostagent import doctor

    v2 = Path(__file__).resolve().parents[1] / "fixtures" / "cgroup2" / "sys" / "fs" / "cgroup"
    assert doctor._swap_accounting(2, str(v2))  # a real v2 host's docker scope has memory.swap.*
    bare = tmp_path / "v2"
    (bare / "system.slice").mkdir(parents=True)
    (bare / "system.slice" / "memory.max").write_text("max\n")
    assert not doctor._swap_accounting(2, str(bare))  # booted without swap accounting
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    assert not doctor._swap_accounting(1, str(v1))
    (v1 / "memory" / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    assert doctor._swap_accounting(1, str(v1))


def test_dockerd_settings_keep_what_the_file_says_and_add_rotation_only_where_it_applies() -> None:
    from hostagent import dockerd

    mine = {"data-root": "/srv/docker", "log-opts": {"max-size": "50m"}, "live-restore": False}
    assert dockerd.planned(mine) == {
        "data-root": "/srv/docker",
        "log-opts": {"max-size": "50m", "max-file": "3"},  # ops' own size stays
        "live-restore": True,
    }
    assert dockerd.planned({}) == {"live-restore": True, "log-opts": {"max-size": "10m", "max-file": "3"}}
    # journald rotates by itself, and max-size would make dockerd refuse to start.
    assert dockerd.planned({"log-driver": "journald"}) == {"log-driver": "journald", "live-restore": True}
    argv = ["dockerd", "--storage-driver", "overlay2", "--log-level=warn", "-H", "fd://"]
    assert dockerd.conflicts({"storage-driver": "x", "log-level": "info", "live-restore": True}, argv) == [
        "log-level",
        "storage-driver",
    ]
    assert dockerd.conflicts(dockerd.planned({}), argv) == []
