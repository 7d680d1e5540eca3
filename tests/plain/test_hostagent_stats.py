"""`hostagent stats` against captured cgroup v1 and v2 trees: exact figures, no Docker needed.

The trees under tests/fixtures/cgroupN are copied to a temporary directory per test, and their
mountinfo rewritten so that /sys/fs/cgroup points into the copy. Docker's API is a fake that
counts the calls: the sweep must inspect a container once, not at every sweep.
"""

from __future__ import annotations

import io
import json
import shutil
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hostagent import __main__ as cli
from hostagent import serve, stats
from hostagent.protocol import AGENT_VERSION

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
V1_ID = "dc36f2d2aa99be20712d3ce0d6f6c63d4be9b0d6c5246f7ee8e87ae4b5aa5839"
V2_ID = "7f3e0c5a9b1d4e2f8a6c3b5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e2f"
V2_PID = 4242
V1_PID = 5151


class FakeDocker:
    """The two Docker API paths a sweep uses, from a table of containers; records each call."""

    def __init__(self) -> None:
        self.containers: dict[str, dict[str, Any]] = {}  # id -> {"pid", "name", "labels", ...}
        self.calls: list[str] = []

    def add(self, cid: str, pid: int, name: str, labels: dict[str, str] | None = None, **more: Any) -> None:
        self.containers[cid] = {"pid": pid, "name": name, "labels": labels or {}, "running": True, **more}

    def get_json(self, path: str, timeout: float = 5.0) -> Any:
        self.calls.append(path)
        if path.startswith("/containers/json"):
            return [
                {
                    "Id": cid,
                    "Names": [f"/{c['name']}"],
                    "Labels": c["labels"],
                    "State": "running",
                    "HostConfig": {"NetworkMode": c.get("network", "default")},
                }
                for cid, c in self.containers.items()
            ]
        cid = path.split("/")[2]
        if cid not in self.containers:
            raise OSError(f"docker API {path}: HTTP 404")
        c = self.containers[cid]
        return {"Id": cid, "State": {"Running": c["running"], "Pid": c["pid"] if c["running"] else 0}}

    def inspections(self) -> list[str]:
        return [p for p in self.calls if not p.startswith("/containers/json")]


@pytest.fixture(autouse=True)
def fresh_agent_state() -> Iterator[None]:
    stats.forget_all()
    stats._mounts = None
    yield
    stats.forget_all()
    stats._mounts = None


@pytest.fixture
def docker(monkeypatch: pytest.MonkeyPatch) -> FakeDocker:
    fake = FakeDocker()
    monkeypatch.setattr(stats.docker_socket, "get_json", fake.get_json)
    return fake


def host_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> Path:
    """A copy of a captured host tree that the agent reads instead of the real one."""
    root = tmp_path / name
    shutil.copytree(FIXTURES / name, root)
    mountinfo = (root / "mountinfo").read_text().replace(" /sys/fs/cgroup", f" {root}/sys/fs/cgroup")
    (root / "mountinfo").write_text(mountinfo)
    monkeypatch.setattr(stats, "MOUNTINFO", str(root / "mountinfo"))
    monkeypatch.setattr(stats, "PROC_ROOT", str(root / "proc"))
    return root


@pytest.fixture
def v2_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker: FakeDocker) -> Path:
    root = host_tree(tmp_path, monkeypatch, "cgroup2")
    docker.add(V2_ID, V2_PID, "shop-web-0", {"io.slipway.app": "shop", "com.example.other": "x"})
    return root


@pytest.fixture
def v1_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker: FakeDocker) -> Path:
    root = host_tree(tmp_path, monkeypatch, "cgroup1")
    docker.add(V1_ID, V1_PID, "shop-db-0", {"io.slipway.managed": "1"})
    return root


def v2_scope(root: Path) -> Path:
    return root / "sys/fs/cgroup/system.slice" / f"docker-{V2_ID}.scope"


def v1_dir(root: Path, controller: str) -> Path:
    return root / "sys/fs/cgroup" / controller / "slw-h1" / V1_ID


def rewrite(path: Path, text: str) -> None:
    # In place, like the kernel: the agent holds these files open between sweeps.
    with open(path, "r+") as handle:
        handle.truncate(0)
        handle.write(text)


def sweep(label: str | None = None) -> dict[str, Any]:
    """One sweep, through JSON as serve sends it."""
    document: dict[str, Any] = json.loads(json.dumps(stats.collect(label)))
    return document


def only(document: dict[str, Any]) -> dict[str, Any]:
    assert len(document["containers"]) == 1
    return dict(document["containers"][0])


# --- figures ---------------------------------------------------------------------------------------


def test_it_reads_every_figure_of_a_cgroup_v2_container(v2_host: Path) -> None:
    document = sweep()
    assert document["agent_version"] == AGENT_VERSION
    assert document["cgroup_version"] == 2
    assert document["sweep_ms"] >= 0
    assert only(document) == {
        "id": V2_ID,
        "name": "shop-web-0",
        "labels": {"io.slipway.app": "shop"},
        "pid": V2_PID,
        "cpu_usage_ns": 8_841_203_000,
        "cpu_periods": 5310,
        "cpu_throttled_periods": 112,
        "cpu_throttled_ns": 4_405_117_000,
        "memory_usage": 58_720_256,
        "memory_limit": 0,  # memory.max says "max"
        "memory_rss": 31_457_280,
        "memory_cache": 24_117_248,
        "memory_working_set": 58_720_256 - 18_874_368,
        "memory_swap": 2_097_152,
        "memory_failcnt": 27,
        "oom_kills": 2,
        "pids": 7,
        "blkio_read_bytes": 15_937_536 + 1_024_000,
        "blkio_write_bytes": 4_202_496,
        "net_rx_bytes": 5_120_330,
        "net_tx_bytes": 210_448,
    }


def test_it_reads_every_figure_of_a_cgroup_v1_container_with_cpu_and_cpuacct_comounted(
    v1_host: Path,
) -> None:
    document = sweep()
    assert document["cgroup_version"] == 1
    assert only(document) == {
        "id": V1_ID,
        "name": "shop-db-0",
        "labels": {"io.slipway.managed": "1"},
        "pid": V1_PID,
        "cpu_usage_ns": 117_869_656,
        "cpu_periods": 1204,
        "cpu_throttled_periods": 37,
        "cpu_throttled_ns": 2_264_571_903,
        "memory_usage": 9_310_208,
        "memory_limit": 67_108_864,
        "memory_rss": 53_248,
        "memory_cache": 8_392_704,
        # total_inactive_file (8388608), not the cgroup's own inactive_file (8384512)
        "memory_working_set": 9_310_208 - 8_388_608,
        "memory_swap": 1_048_576,
        "memory_failcnt": 3,
        "oom_kills": 1,
        "pids": 1,
        "blkio_read_bytes": 1_458_176 + 20_480,  # both devices; the Total lines are not counted
        "blkio_write_bytes": 8_388_608,
        "net_rx_bytes": 183_512 + 1_000,  # eth0 and eth1, never lo
        "net_tx_bytes": 96_348 + 500,
    }


def test_a_v1_limit_of_the_largest_page_count_means_no_limit(v1_host: Path) -> None:
    rewrite(v1_dir(v1_host, "memory") / "memory.limit_in_bytes", "9223372036854771712\n")
    assert only(sweep())["memory_limit"] == 0


def test_a_v2_limit_in_bytes_is_reported_as_is(v2_host: Path) -> None:
    rewrite(v2_scope(v2_host) / "memory.max", "67108864\n")
    assert only(sweep())["memory_limit"] == 64 * 2**20


def test_v1_swap_comes_from_memsw_when_memory_stat_has_no_swap_line(v1_host: Path) -> None:
    memory = v1_dir(v1_host, "memory")
    text = (memory / "memory.stat").read_text()
    rewrite(memory / "memory.stat", "".join(line for line in text.splitlines(True) if "swap " not in line))
    # memsw 10358784 - usage 9310208
    assert only(sweep())["memory_swap"] == 1_048_576


def test_v1_working_set_falls_back_to_inactive_file_without_total_lines(v1_host: Path) -> None:
    memory = v1_dir(v1_host, "memory")
    text = (memory / "memory.stat").read_text()
    rewrite(
        memory / "memory.stat",
        "".join(line for line in text.splitlines(True) if not line.startswith("total_")),
    )
    assert only(sweep())["memory_working_set"] == 9_310_208 - 8_384_512


def test_the_working_set_never_goes_below_zero(v2_host: Path) -> None:
    # memory.current and memory.stat are read a moment apart; the kernel can move pages between.
    rewrite(v2_scope(v2_host) / "memory.current", "18000000\n")
    figures = only(sweep())
    assert figures["memory_usage"] == 18_000_000
    assert figures["memory_working_set"] == 0


def test_a_host_without_the_pids_controller_leaves_the_figure_out(v1_host: Path) -> None:
    shutil.rmtree(v1_host / "sys/fs/cgroup/pids")
    figures = only(sweep())
    assert "pids" not in figures
    assert "error" not in figures
    assert figures["memory_usage"] == 9_310_208


def test_a_container_on_the_host_network_has_no_network_figures(v2_host: Path, docker: FakeDocker) -> None:
    docker.containers[V2_ID]["network"] = "host"
    figures = only(sweep())
    assert "net_rx_bytes" not in figures
    assert figures["cpu_periods"] == 5310


# --- where the files are --------------------------------------------------------------------------


# This machine's own layout: cpu and cpuacct in separate hierarchies, an empty cgroup2 beside.
HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
90 41 0:32 /slw-h1 /srv/memory\\040view rw,relatime - cgroup cgroup rw,memory
"""


def test_a_hybrid_host_counts_as_v1_and_each_controller_has_its_own_mount() -> None:
    mounts = stats.parse_mountinfo(HYBRID_MOUNTINFO)
    assert mounts.version == 1
    assert mounts.v1["cpu"] == stats.Mount("/sys/fs/cgroup/cpu", "/")
    assert mounts.v1["cpuacct"] == stats.Mount("/sys/fs/cgroup/cpuacct", "/")
    # The whole hierarchy wins over a bind mount of a subtree, whatever the order.
    assert mounts.v1["memory"] == stats.Mount("/sys/fs/cgroup/memory", "/")
    assert mounts.v2 == stats.Mount("/sys/fs/cgroup/unified", "/")


def test_a_mount_of_a_subtree_shows_only_the_cgroups_under_it() -> None:
    whole = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    mounts = stats.parse_mountinfo(HYBRID_MOUNTINFO.replace(whole, ""))
    view = mounts.v1["memory"]
    assert view == stats.Mount("/srv/memory view", "/slw-h1")  # \040 is a space
    assert stats._under(view, f"/slw-h1/{V1_ID}") == f"/srv/memory view/{V1_ID}"
    assert stats._under(view, "/slw-h2/abc") is None


def test_the_v2_mount_of_the_whole_tree_wins_over_a_containers_view_of_it(v2_host: Path) -> None:
    mounts = stats.cgroup_mounts(refresh=True)
    assert mounts.version == 2
    assert mounts.v2 == stats.Mount(f"{v2_host}/sys/fs/cgroup", "/")
    target = stats.resolve(V2_PID, mounts)
    try:
        assert target.files["usage"] == f"{v2_scope(v2_host)}/memory.current"
        assert target.files["cgroup"] == f"{v2_host}/proc/{V2_PID}/cgroup"
        assert target.net == f"{v2_host}/proc/{V2_PID}/net/dev"
    finally:
        target.close()


def test_v1_files_follow_the_daemons_cgroup_parent_not_a_docker_directory(v1_host: Path) -> None:
    target = stats.resolve(V1_PID, stats.cgroup_mounts(refresh=True))
    assert target.files["cpuacct"] == f"{v1_dir(v1_host, 'cpu,cpuacct')}/cpuacct.usage"
    assert target.files["io"] == f"{v1_dir(v1_host, 'blkio')}/blkio.throttle.io_service_bytes"
    # memory.stat has a swap line, so memsw is never read.
    assert "memsw" not in target.files
    assert all("/docker/" not in path for path in target.files.values())


def test_parsers_take_the_kernels_formats() -> None:
    assert stats.parse_proc_cgroup(b"5:cpu,cpuacct:/a/b\n1:name=systemd:/a/b\n0::/c\n") == (
        {"cpu": "/a/b", "cpuacct": "/a/b", "name=systemd": "/a/b"},
        "/c",
    )
    assert stats.parse_flat(b"oom_kill_disable 0\nunder_oom 0\noom_kill 4\n")[b"oom_kill"] == 4
    assert stats.parse_io_v2(b"") == (0, 0)
    assert stats.parse_blkio_v1(b"Total 0\n") == (0, 0)


# --- the sweep: inspect once, notice restarts and stops ----------------------------------------


def test_a_second_sweep_asks_docker_nothing_until_a_container_comes_or_goes(
    v2_host: Path, docker: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert only(sweep())["memory_usage"] == 58_720_256
    assert docker.inspections() == [f"/containers/{V2_ID}/json"]
    rewrite(v2_scope(v2_host) / "memory.current", "60817408\n")
    docker.calls.clear()
    # Nothing new beside the known container's cgroup: fresh figures, no list, no inspect.
    assert only(sweep())["memory_usage"] == 60_817_408
    assert docker.calls == []
    # A new cgroup beside it (a container started): the next sweep lists again.
    (v2_scope(v2_host).parent / "docker-new.scope").mkdir()
    assert only(sweep())["memory_usage"] == 60_817_408
    assert docker.calls == ["/containers/json"]
    # And the list is asked for again once it is old, whatever the cgroups say.
    docker.calls.clear()
    monkeypatch.setattr(stats, "LIST_MAX_AGE", 0.0)
    sweep()
    assert docker.calls == ["/containers/json"]


def test_a_restarted_container_is_inspected_again_and_read_at_its_new_pid(
    v2_host: Path, docker: FakeDocker
) -> None:
    stats.collect()
    shutil.copytree(v2_host / "proc" / str(V2_PID), v2_host / "proc" / "4343")
    rewrite(v2_host / "proc" / str(V2_PID) / "cgroup", "0::/user.slice/user-1000.slice/session-3.scope\n")
    docker.containers[V2_ID]["pid"] = 4343
    docker.calls.clear()
    figures = only(sweep())
    assert figures["pid"] == 4343
    assert docker.inspections() == [f"/containers/{V2_ID}/json"]


def test_a_container_that_stops_between_sweeps_gets_an_error_and_the_others_their_figures(
    v2_host: Path, docker: FakeDocker
) -> None:
    docker.add("0" * 64, 999, "gone-0", {"io.slipway.app": "gone"})
    docker.containers["0" * 64]["running"] = False  # listed, then stopped before inspection
    document = sweep()
    by_name = {c["name"]: c for c in document["containers"]}
    assert by_name["gone-0"]["error"].startswith("container went away during the sweep")
    assert by_name["gone-0"]["labels"] == {"io.slipway.app": "gone"}
    assert "memory_usage" not in by_name["gone-0"]
    assert by_name["shop-web-0"]["memory_usage"] == 58_720_256


def test_a_container_whose_cgroup_vanishes_mid_sweep_gets_an_error(v2_host: Path, docker: FakeDocker) -> None:
    shutil.rmtree(v2_scope(v2_host))  # inspect still says running: the cgroup went a moment later
    figures = only(sweep())
    assert figures["error"].startswith("container went away during the sweep")
    assert "cpu_usage_ns" not in figures
    assert stats._TARGETS == {}


def test_a_held_container_whose_process_is_gone_is_inspected_again_then_reported(
    v2_host: Path, docker: FakeDocker
) -> None:
    stats.collect()
    rewrite(v2_host / "proc" / str(V2_PID) / "cgroup", "")  # what a read of a dead pid's file gives
    docker.containers[V2_ID]["running"] = False
    docker.calls.clear()
    figures = only(sweep())
    assert "not running" in figures["error"]
    assert docker.inspections() == [f"/containers/{V2_ID}/json"]
    assert stats._TARGETS == {}


def test_containers_no_longer_listed_are_forgotten_and_their_files_closed(
    v2_host: Path, docker: FakeDocker
) -> None:
    stats.collect()
    target = stats._TARGETS[V2_ID]
    assert target.fds  # held between sweeps
    rewrite(v2_host / "proc" / str(V2_PID) / "cgroup", "")
    shutil.rmtree(v2_scope(v2_host))  # the kernel removes a stopped container's cgroup
    del docker.containers[V2_ID]
    assert sweep()["containers"] == []
    assert stats._TARGETS == {}
    assert target.fds == {}


def test_a_container_read_ahead_of_the_list_but_no_longer_listed_is_not_reported(
    v2_host: Path, docker: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The files of the last sweep's containers are read while dockerd lists; the list decides.
    monkeypatch.setattr(stats, "LIST_MAX_AGE", 0.0)  # list every sweep
    sweep()
    del docker.containers[V2_ID]  # say, left out by the label filter now; its process still runs
    assert sweep()["containers"] == []
    assert V2_ID in stats._TARGETS


def test_the_label_filter_goes_to_docker(v2_host: Path, docker: FakeDocker) -> None:
    sweep("io.slipway.managed=1")
    path, _, query = docker.calls[0].partition("?filters=")
    assert path == "/containers/json"
    assert json.loads(urllib.parse.unquote(query)) == {"label": ["io.slipway.managed=1"]}


# --- wiring ------------------------------------------------------------------------------------------


def test_serve_answers_stats_requests(v2_host: Path, docker: FakeDocker) -> None:
    requests = "\n".join(
        json.dumps({"id": i, "cmd": "stats", "args": {"label": "io.slipway.app=shop"}}) for i in (1, 2)
    )
    out = io.StringIO()
    serve.serve(io.StringIO(requests + "\n"), out)
    replies = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["ok"] for r in replies] == [True, True]
    assert replies[1]["result"]["containers"][0]["memory_swap"] == 2_097_152
    assert len(docker.inspections()) == 1


def test_the_command_line_prints_one_stats_document(
    v2_host: Path, docker: FakeDocker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["stats", "--label", "io.slipway.app=shop"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["containers"][0]["id"] == V2_ID
    assert json.loads(urllib.parse.unquote(docker.calls[0].partition("?filters=")[2])) == {
        "label": ["io.slipway.app=shop"]
    }
