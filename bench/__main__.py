"""`make bench`: Slipway's figures beside raw Docker on the same lab host, in the same run.

Runs against its own SQLite database (var/bench.sqlite3) and its own Redis database, with a
real Celery worker, on the lab fleet. Writes bench/results/latest.json:
{"figures": [{"name", "unit", "value", "baseline", "ratio"}, ...]}
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
DB = VAR / "bench.sqlite3"
BROKER = "redis://127.0.0.1:6379/14"
os.environ["DATABASE_URL"] = f"sqlite:///{DB}"
os.environ["CELERY_BROKER_URL"] = BROKER
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
for suffix in ("", "-wal", "-shm"):
    Path(f"{DB}{suffix}").unlink(missing_ok=True)

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

from apps.accounts.models import Membership, Team  # noqa: E402
from apps.applications import services  # noqa: E402
from apps.applications.models import App, BaseImage  # noqa: E402
from apps.hosts import gateway  # noqa: E402
from apps.hosts.models import Host  # noqa: E402
from apps.hosts.transport import ContainerSpec  # noqa: E402
from apps.instances.models import Instance, Operation  # noqa: E402
from apps.instances.spec import instance_spec  # noqa: E402
from apps.lab import fleet, netns  # noqa: E402
from apps.lab.register import prepare_lab_hosts, register_hosts, register_images, register_pool  # noqa: E402
from apps.metrics import services as metrics  # noqa: E402
from apps.metrics.models import Sample  # noqa: E402
from apps.metrics.selectors import app_metrics, window  # noqa: E402
from apps.resources import services as resources  # noqa: E402
from apps.resources.models import ResourceRequest  # noqa: E402
from bench.common import RAW_ADDRESSES, commit, figure, figures, machine, raw_run_args, say, wait_for  # noqa: E402
from bench.events import bench_events  # noqa: E402
from bench.publish import bench_publish  # noqa: E402
from bench.releases import bench_releases  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


def run_parallel(jobs: list[tuple[fleet.LabHost, list[str]]]) -> None:
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        list(pool.map(lambda job: fleet.docker(job[0], *job[1]), jobs))


def start_worker() -> tuple[subprocess.Popen[bytes], Any]:
    """A real Celery worker on the bench's database and broker; (process, its log file)."""
    log = open(VAR / "log" / "bench-worker.log", "ab")  # noqa: SIM115 - closed by stop_worker
    worker = subprocess.Popen(
        [
            sys.executable,
            *("-m", "celery", "-A", "portal", "worker", "--concurrency", "2", "--queues", "celery,builds"),
            *("--without-mingle", "--without-gossip", "--loglevel", "WARNING"),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )
    time.sleep(3)  # let the worker connect
    return worker, log


def stop_worker(worker: subprocess.Popen[bytes], log: Any) -> None:
    worker.terminate()
    worker.wait(timeout=30)
    log.close()


def timed(fn: Callable[..., object], *args: object) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def main() -> int:
    say("setting up: lab, database, worker")
    config = fleet.LabConfig.from_settings()
    lab = fleet.up(config, log=lambda _: None)
    call_command("migrate", verbosity=0)
    hosts = register_hosts(lab, log=lambda _: None)
    register_images(("busybox", "debian-python"), log=lambda _: None)
    register_pool(config, hosts, log=lambda _: None, first="10.213.240.1", last="10.213.249.254")
    prepare_lab_hosts(hosts, log=lambda _: None)
    bench_prepare(hosts[-1], lab[-1])
    redis.Redis.from_url(BROKER).flushdb()  # the bench's own broker database: no stale tasks
    team = Team.objects.create(slug="bench", name="Bench")
    user = User.objects.create_user("bench")  # no password: the bench signs in with force_login
    Membership.objects.create(team=team, user=user, role=Membership.Role.DEVELOPER)
    image = BaseImage.objects.get(name="slipway/busybox")
    app = services.app_create(user=user, team=team, slug="bench", base_image=image, memory_mb=32, cpus="0.1")
    client = Client()
    client.force_login(user)
    worker, log = start_worker()
    by_name = {h.name: h for h in lab}
    try:

        def scale(n: int) -> None:
            response = client.post(
                f"/api/v1/apps/{app.slug}/scale/", {"instances": n}, content_type="application/json"
            )
            assert response.status_code == 202, response.content
            op_id = response.json()["id"]
            wait_for(lambda: Operation.objects.filter(pk=op_id, status__in=Operation.TERMINAL).exists())
            op = Operation.objects.get(pk=op_id)
            assert op.status == Operation.Status.SUCCEEDED, op.error

        def running(n: int) -> bool:
            return (
                Instance.objects.filter(app=app, state=Instance.State.RUNNING).count() == n
                and not Instance.objects.filter(app=app).exclude(state=Instance.State.RUNNING).exists()
            )

        # Warm up: the first container on a host pays for the image's first use.
        scale(2)
        scale(0)

        def specs() -> list[tuple[fleet.LabHost, ContainerSpec]]:
            return [
                (by_name[i.host.name], instance_spec(i))
                for i in Instance.objects.filter(app=app).select_related("app", "host", "image")
            ]

        # --- scale +1: API call -> running, beside raw `docker run -d` of the same container
        # (taken from the instance the portal just made, run on the same host once it is gone)
        portal, raw = [], []
        for i in range(ROUNDS):
            started = time.perf_counter()
            scale(1)
            wait_for(lambda: running(1))
            portal.append(time.perf_counter() - started)
            [(lab_host, spec)] = specs()
            scale(0)
            raw.append(timed(fleet.docker, lab_host, *raw_run_args(spec, f"bench-raw-{i}")))
            fleet.docker(lab_host, "rm", "-f", f"bench-raw-{i}")
        figure("scale_1", "s", statistics.median(portal), statistics.median(raw), rounds=ROUNDS)

        # --- scale +10 across the hosts, beside the same 10 containers run raw in parallel ----
        portal, raw = [], []
        rounds = max(1, ROUNDS // 2)
        for i in range(rounds):
            started = time.perf_counter()
            scale(10)
            wait_for(lambda: running(10))
            portal.append(time.perf_counter() - started)
            made = specs()
            scale(0)
            names = [(h, spec, f"bench-raw10-{i}-{n}") for n, (h, spec) in enumerate(made)]
            raw.append(timed(run_parallel, [(h, raw_run_args(spec, name)) for h, spec, name in names]))
            for lab_host, _, name in names:
                fleet.docker(lab_host, "rm", "-f", name)
        figure("scale_10", "s", statistics.median(portal), statistics.median(raw), rounds=rounds)

        # --- remove: scale -1 -> container gone, beside raw `docker rm -f` --------------------
        portal, raw = [], []
        scale(1)
        for i in range(ROUNDS):
            scale(2)
            doomed = Instance.objects.select_related("app", "host", "image").get(app=app, slot=1)
            lab_host, spec = by_name[doomed.host.name], instance_spec(doomed)
            started = time.perf_counter()
            scale(1)
            wait_for(Instance.objects.filter(pk=doomed.pk).exists, negate=True)
            portal.append(time.perf_counter() - started)
            fleet.docker(lab_host, *raw_run_args(spec, f"bench-rm-{i}"))
            raw.append(timed(fleet.docker, lab_host, "rm", "-f", f"bench-rm-{i}"))
        figure("remove", "s", statistics.median(portal), statistics.median(raw), rounds=ROUNDS)

        # --- resize: a lead's approval -> limits read back on all 4 instances, beside raw
        # `docker update` of the same 4 containers in parallel ------------------------------
        scale(4)
        lead = User.objects.create_user("bench-lead")
        Membership.objects.create(team=team, user=lead, role=Membership.Role.LEAD)
        portal, raw = [], []
        for i in range(ROUNDS):
            memory = 48 + 16 * i  # an increase each round, so a lead decides (no auto-approval)
            request = resources.request_create(
                user=user, app=App.objects.get(pk=app.pk), memory_mb=memory, cpus="0.1", reason="bench"
            )
            started = time.perf_counter()
            resources.request_decide(user=lead, request=request, approve=True)
            settled = ResourceRequest.objects.filter(pk=request.pk, state__in=["applied", "partial"])
            wait_for(settled.exists)
            portal.append(time.perf_counter() - started)
            request.refresh_from_db()
            assert request.state == "applied", request.result
            targets = [(by_name[i.host.name], i.container_name) for i in Instance.objects.filter(app=app)]
            raw.append(
                timed(
                    run_parallel,
                    [
                        (h, ["update", "--memory", f"{memory}m", "--memory-swap", f"{memory}m", name])
                        for h, name in targets
                    ],
                )
            )
        figure("resize_apply", "s", statistics.median(portal), statistics.median(raw), rounds=ROUNDS)
        bench_roll(client, app, lab, by_name)
        bench_releases(client, App.objects.get(pk=app.pk), lab, by_name, ROUNDS)
        scale(0)
        bench_events(lab, by_name, user, team, ROUNDS)
    finally:
        stop_worker(worker, log)
        for lab_host in lab:
            ids = fleet.docker(lab_host, "ps", "-aq", "--filter", "label=io.slipway.bench=1").stdout.split()
            ids += fleet.docker(
                lab_host, "ps", "-aq", "--filter", "label=io.slipway.app=bench"
            ).stdout.split()
            if ids:
                fleet.docker(lab_host, "rm", "-f", *ids, check=False)

    # Before the seeded apps below reserve the whole fleet.
    bench_relocation(lab, by_name, user, team)

    # --- app list page: a developer whose teams hold 500 apps with 2,000 instances -------------
    call_command("seed_apps", team="bench", apps=500, instances=2000, seed=1, verbosity=0)
    samples = []
    for _ in range(5):
        client.get("/apps/")
    for _ in range(50):
        started = time.perf_counter()
        response = client.get("/apps/")
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    samples.sort()
    figure("app_list_p95", "ms", samples[int(len(samples) * 0.95) - 1], None, rounds=len(samples))

    bench_metrics(lab, by_name)
    bench_planner()
    hosts_used = [h.name for h in Host.objects.all() if h.name.startswith("lab-")]
    bench_publish(ROUNDS)  # on 8 lab hosts of its own making; the lab is back to LAB_HOSTS after
    return _write("latest.json", hosts_used)


def _write(name: str, hosts: list[str]) -> int:
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "figures": figures,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit(),
        "machine": machine(),
        "hosts": hosts,
        "rounds": ROUNDS,
    }
    (out / name).write_text(json.dumps(document, indent=2) + "\n")
    say(f"written to {out / name}")
    return 0


def main_publish() -> int:
    """`python -m bench publish`: only publish_8_hosts, into bench/results/publish.json."""
    call_command("migrate", verbosity=0)
    bench_publish(ROUNDS)
    return _write("publish.json", [f"lab-h{n}" for n in range(1, 9)])


def bench_roll(client: Client, app: App, lab: list[fleet.LabHost], by_name: dict[str, fleet.LabHost]) -> None:
    """roll_4: a rolling upgrade of the 4-instance app (API call -> every instance recreated on
    the other version and past its TCP health check, one at a time), beside four raw
    stop/rm/run cycles one after another on the same hosts. Rounds alternate v1 -> v2 -> v1."""
    from apps.applications.models import BuildState
    from apps.images import publish

    v1 = BaseImage.objects.get(name="slipway/busybox", tag="1")
    v2 = BaseImage.objects.create(
        name=v1.name,
        tag="bench-2",
        runtime=v1.runtime,
        default_command=v1.default_command,
        default_port=v1.default_port,
        recipe=v1.recipe.replace("CMD", "ENV SLIPWAY_IMAGE_VERSION=bench-2\nCMD", 1),
        state=BuildState.DRAFT,
    )
    ops = User.objects.create_user("bench-ops", is_staff=True)
    publish.image_publish(user=ops, image=v2)
    publish.run(v2.pk)  # here, not in the worker: the bench times the roll, not the build
    v2.refresh_from_db()
    assert v2.state == BuildState.PUBLISHED, v2.build_error
    portal, raw = [], []
    targets = [v2, v1]
    rounds = ROUNDS + ROUNDS % 2
    for i in range(rounds):  # even: the app ends on v1, so v2 can go again
        target = targets[i % 2]
        started = time.perf_counter()
        response = client.post(
            f"/api/v1/apps/{app.slug}/upgrade/", {"base_image": target.pk}, content_type="application/json"
        )
        assert response.status_code == 202, response.content
        done = Operation.objects.filter(pk=response.json()["id"], status__in=Operation.TERMINAL)
        wait_for(done.exists, timeout=300)
        portal.append(time.perf_counter() - started)
        op = Operation.objects.get(pk=response.json()["id"])
        assert op.status == Operation.Status.SUCCEEDED, op.error
        # Raw: the app's four containers by hand (on their hosts, with addresses of their own),
        # one after another: stop, rm, run on the other image.
        made = [
            (by_name[inst.host.name], instance_spec(inst))
            for inst in Instance.objects.filter(app=app).select_related("app", "host", "image")
        ]
        before = [v1, v2][i % 2].reference  # what the app ran before this round
        names = [(h, spec, f"bench-roll-{i}-{n}", RAW_ADDRESSES[n]) for n, (h, spec) in enumerate(made)]
        # The specs are on the target now (the portal rolled first): the raw ones start before it.
        run_parallel(
            [(h, _on_image(raw_run_args(spec, name, ip), spec, before)) for h, spec, name, ip in names]
        )
        started = time.perf_counter()
        for lab_host, spec, name, ip in names:
            fleet.docker(lab_host, "stop", "-t", "10", name)
            fleet.docker(lab_host, "rm", name)
            fleet.docker(lab_host, *raw_run_args(spec, name, ip))
        raw.append(time.perf_counter() - started)
        for lab_host, _, name, _ in names:
            fleet.docker(lab_host, "rm", "-f", name, check=False)
    figure("roll_4", "s", statistics.median(portal), statistics.median(raw), rounds=rounds)
    for lab_host in lab:
        fleet.docker(lab_host, "rmi", v2.reference, check=False)


def _on_image(args: list[str], spec: ContainerSpec, reference: str) -> list[str]:
    """The raw run's arguments with another image in place of the spec's."""
    at = args.index(spec.image, len(args) - len(spec.command) - 1)
    return [*args[:at], reference, *args[at + 1 :]]


def _api_one_shot_stats(lab_host: fleet.LabHost, names: list[str]) -> None:
    """Docker's own stats for each container, one request each, all at once, over the host's
    unix socket (`stream=false&one-shot=true`: one read, not the two a second apart that
    `docker stats --no-stream` waits for; dockerd still answers on its collector's 1 s tick)."""
    import http.client
    import socket

    def one(name: str) -> None:
        conn = http.client.HTTPConnection("localhost", timeout=30)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(lab_host.docker_socket))
        conn.sock = sock
        try:
            conn.request("GET", f"/containers/{name}/stats?stream=false&one-shot=true")
            response = conn.getresponse()
            body = json.loads(response.read())
            assert response.status == 200 and "memory_stats" in body, body
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        list(pool.map(one, names))


CGROUP_FILES = {
    "memory": (
        "memory.usage_in_bytes",
        "memory.limit_in_bytes",
        "memory.stat",
        "memory.failcnt",
        "memory.memsw.usage_in_bytes",
        "memory.oom_control",
    ),
    "cpuacct": ("cpuacct.usage",),
    "cpu": ("cpu.stat",),
    "pids": ("pids.current",),
    "blkio": ("blkio.throttle.io_service_bytes",),
}


def _cgroup_files(pids: list[int]) -> None:
    """The counters the agent's sweep reports, read straight from each container's cgroup v1
    files and /proc/PID/net/dev, in this process: no SSH, no agent, no JSON."""
    for pid in pids:
        with open(f"/proc/{pid}/cgroup") as handle:
            where = {}
            for line in handle:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for controller in controllers.split(","):
                    where[controller] = path
        for controller, names in CGROUP_FILES.items():
            for name in names:
                with open(f"/sys/fs/cgroup/{controller}{where[controller]}/{name}", "rb") as handle:
                    handle.read()
        with open(f"/proc/{pid}/net/dev", "rb") as handle:
            handle.read()


def bench_metrics(lab: list[fleet.LabHost], by_name: dict[str, fleet.LabHost]) -> None:
    """Sweep cost per container beside `docker stats --no-stream`, storage rate, chart query."""
    host = Host.objects.get(name=lab[0].name)
    lab_host = by_name[host.name]
    names: list[str] = []
    try:
        for count in (50, 200):
            new = [f"bench-stats-{i}" for i in range(len(names), count)]
            run_parallel(
                [
                    (
                        lab_host,
                        [
                            *("run", "-d", "--name", name, "--label", "io.slipway.bench=1"),
                            *("--memory", "16m", "--init", "slipway/busybox:1", "sleep", "3600"),
                        ],
                    )
                    for name in new
                ]
            )
            names += new
            gateway.agent(host, "stats", timeout=60, label="io.slipway.bench=1")  # learn the new ones
            pids = [
                int(p)
                for p in fleet.docker(lab_host, "inspect", "-f", "{{.State.Pid}}", *names).stdout.split()
            ]
            walls, api, files = [], [], []
            for _ in range(ROUNDS):  # alternating, so neither side has the warmer caches
                started = time.perf_counter()
                document = gateway.agent(host, "stats", timeout=60, label="io.slipway.bench=1")
                walls.append((time.perf_counter() - started) * 1000)
                assert len(document["containers"]) == count, len(document["containers"])
                api.append(timed(_api_one_shot_stats, lab_host, names) * 1000)
                files.append(timed(_cgroup_files, pids) * 1000)
            # The whole sweep as the portal receives it (over SSH, JSON parsed), beside the
            # cheapest raw ways to read the same counters of the same containers.
            figure(f"sweep_{count}", "ms", statistics.median(walls), statistics.median(api), rounds=ROUNDS)
            figure(
                f"sweep_{count}_vs_cgroup_files",
                "ms",
                statistics.median(walls),
                statistics.median(files),
                rounds=ROUNDS,
            )
    finally:
        for chunk in range(0, len(names), 50):
            fleet.docker(lab_host, "rm", "-f", *names[chunk : chunk + 50], check=False)

    # Storing: one sweep document per host for the seeded instances (2,000 rows).
    seeded = list(Instance.objects.select_related("host").filter(app__team__slug="bench")[:2000])
    by_host: dict[int, list[Instance]] = {}
    for instance in seeded:
        by_host.setdefault(instance.host_id, []).append(instance)
    documents = [
        (
            group[0].host,
            {
                "time": time.time(),
                "containers": [
                    {
                        "id": f"{i.pk:064d}",
                        "name": i.container_name,
                        "cpu_usage_ns": 10**9,
                        "memory_limit": 2**25,
                    }
                    for i in group
                ],
            },
        )
        for group in by_host.values()
    ]
    rates = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        stored = sum(metrics.store(h, d) for h, d in documents)
        rates.append(stored / (time.perf_counter() - started))
    figure("samples_per_s", "samples/s", statistics.median(rates), None, rounds=ROUNDS)

    # A 24 h chart of one instance: a day of sweeps every 10 s, rolled up, then queried.
    instance = seeded[0]
    now = timezone.now()
    Sample.objects.filter(app_id=instance.app_id).delete()
    Sample.objects.bulk_create(
        [
            Sample(
                app_id=instance.app_id,
                slot=instance.slot,
                host_id=instance.host_id,
                container_id="c",
                t=now - timedelta(seconds=10 * k),
                cpu_limit=0.5,
                cpu_ns=(8640 - k) * 2 * 10**9,
                memory_usage=2**24,
                memory_limit=2**25,
                working_set=2**23,
            )
            for k in range(8640)
        ],
        batch_size=1000,
    )
    metrics.rollup(now=now)
    app = App.objects.get(pk=instance.app_id)
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        chart = app_metrics(app, window(range_name="24h"), slot=instance.slot)
        timings.append((time.perf_counter() - started) * 1000)
    assert sum(v is not None for v in chart["series"][0]["cpu_pct"]) > 1000
    figure("chart_query_24h", "ms", statistics.median(timings), None, rounds=len(timings))


def _bare(host: Host, lab_host: fleet.LabHost) -> None:
    """What a server has before the portal touched it: no agent, IP forwarding on."""
    for path in lab_host.agent_dir.iterdir():
        path.unlink() if path.is_symlink() else shutil.rmtree(path)
    (lab_host.state / "sysctl.d" / "90-slipway.conf").unlink(missing_ok=True)
    gateway.forget(host)
    netns.sh("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", netns=lab_host.netns)


def _prepare_by_hand(host: Host, lab_host: fleet.LabHost) -> None:
    """The same steps as an ops script over the same SSH connection, one command each: copy the
    agent (cat > file), check its sha256, move it in place, link it current, run it once, turn
    forwarding off and persist it, then run the doctor."""
    from apps.hosts import agent

    bundle = agent.bundle()
    root = agent.root()
    target = f"{root}/{bundle.name}"
    sysctl_dir = str(lab_host.state / "sysctl.d")  # the lab host's SLIPWAY_SYSCTL_DIR

    def must(argv: list[str], stdin: bytes | None = None) -> bytes:
        result = gateway.run(host, argv, timeout=60, stdin=stdin)
        assert result.ok, (argv, result.stderr)
        return result.stdout

    must(["mkdir", "-p", target, sysctl_dir])
    must(["dd", f"of={target}/hostagent.pyz.part", "status=none"], stdin=bundle.data)
    assert must(["sha256sum", f"{target}/hostagent.pyz.part"]).split()[0].decode() == bundle.sha256
    must(["mv", "-f", f"{target}/hostagent.pyz.part", f"{target}/hostagent.pyz"])
    must(["ln", "-sfn", bundle.name, f"{root}/current"])
    must(["python3", f"{root}/current/hostagent.pyz", "--version"])
    must(["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
    must(["dd", f"of={sysctl_dir}/90-slipway.conf", "status=none"], stdin=b"net.ipv4.ip_forward = 0\n")
    must(["python3", f"{root}/current/hostagent.pyz", "doctor", "--network", "public:", "--forward-off"])


def bench_prepare(host: Host, lab_host: fleet.LabHost) -> None:
    """Prepare on a bare lab host (no agent, forwarding on) until Ready, beside the same steps
    done by hand over SSH (_prepare_by_hand). Prepare also probes twice and checks the pool's
    network and base images, which the script does not."""
    from apps.fleet import prepare
    from apps.fleet.models import Preparation

    portal, raw = [], []
    for _ in range(ROUNDS):
        _bare(host, lab_host)
        started = time.perf_counter()
        done = prepare.prepare_now(host)
        portal.append(time.perf_counter() - started)
        assert done.state == Preparation.State.READY, (done.error, done.steps)
        _bare(host, lab_host)
        started = time.perf_counter()
        _prepare_by_hand(host, lab_host)
        raw.append(time.perf_counter() - started)
    prepare.prepare_now(host)  # leave it as the portal would
    figure("prepare_host", "s", statistics.median(portal), statistics.median(raw), rounds=ROUNDS)


def bench_planner() -> None:
    """Consolidating the seeded synthetic fleet (500 apps, 2,000 instances on 60 hosts): hosts
    after ÷ the lower bound (total demand ÷ host size, per resource), and the planning time."""
    from apps.fleet import planner

    hosts, items = planner.synthetic_fleet(apps=500, instances=2000, hosts=60, seed=1)
    times, result = [], None
    for _ in range(ROUNDS):
        result = planner.plan(hosts, items)
        times.append(result.seconds)
    assert result is not None and not result.unplaced
    say(
        f"synthetic fleet: {result.hosts_before} -> {result.hosts_after} hosts (lower bound "
        f"{result.lower_bound}), {len(result.moves)} moves"
    )
    figure("packing_ratio", "x", result.ratio, None, rounds=1)
    figure("planning_time", "s", statistics.median(times), None, rounds=ROUNDS)


def bench_relocation(
    lab: list[fleet.LabHost], by_name: dict[str, fleet.LabHost], user: User, team: Team
) -> None:
    """Moving a VM with a 100 MB app directory through the worker, beside the same copy done by
    hand (OpenSSH tar | tar) plus a `docker run` of the app; and the cutover's downtime as a
    probe polling the VM's address every 50 ms sees it."""
    import ipaddress
    import threading

    from django.conf import settings

    from apps.hosts.transport import fingerprint
    from apps.lab.vm import LegacyVM, vm_down, vm_password, vm_up
    from apps.relocations import services as relocations
    from apps.relocations.models import Relocation

    config = lab[0].config
    vm = LegacyVM(
        config,
        "vmb",
        ssh_address=ipaddress.IPv4Address("10.213.245.11"),
        service_address=ipaddress.IPv4Address("10.213.245.10"),
        data_mb=100,
    )
    url = f"http://{vm.service_address}:{vm.port}/"
    gateway.portal_public_key()  # made on first use
    key = str(settings.SSH_KEY_PATH)  # the raw baseline runs OpenSSH with the portal's own key
    worker, log = start_worker()
    ssh = ["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    ssh += ["-o", "LogLevel=ERROR"]
    lab_host = lab[0]
    raw_dir = f"{lab_host.volume_root}/bench-raw-notes"

    def by_hand() -> float:
        """tar over OpenSSH from the VM into a directory on the host, then `docker run` of the
        app on the pool's network with a static address, until it answers."""
        netns.sh("rm", "-rf", raw_dir)
        started = time.perf_counter()
        source = subprocess.Popen(
            [*ssh, f"root@{vm.ssh_address}", "tar", "-C", vm.app_dir, "-cf", "-", "."], stdout=subprocess.PIPE
        )
        target = subprocess.run(
            [*ssh, f"root@{lab_host.address}", f"mkdir -p {raw_dir} && tar -xf - -C {raw_dir}"],
            stdin=source.stdout,
            check=True,
        )
        assert source.wait() == 0 and target.returncode == 0
        fleet.docker(
            lab_host,
            *("run", "-d", "--name", "bench-raw-notes", "--label", "io.slipway.bench=1", "--init"),
            *("--network", "public", "--ip", "10.213.246.1", "-v", f"{raw_dir}:{vm.app_dir}"),
            *("-e", f"NOTES_DATA={vm.app_dir}/data", "slipway/debian-python:1"),
            *("python3", f"{vm.app_dir}/server.py", "--port", "8080"),
        )
        wait_for(lambda: _answers("http://10.213.246.1:8080/"), timeout=60, interval=0.05)
        took = time.perf_counter() - started
        fleet.docker(lab_host, "rm", "-f", "bench-raw-notes", check=False)
        netns.sh("rm", "-rf", raw_dir)
        return took

    def registered(name: str) -> Relocation:
        """The VM registered, its key confirmed and the portal's key installed on it (which the
        copy by hand uses too)."""
        relocation = relocations.relocation_register(
            user=user, team=team, name=name, address=str(vm.ssh_address)
        )
        relocation = relocations.relocation_confirm_key(
            user=user, relocation=relocation, fingerprint_seen=fingerprint(relocation.offered_key)
        )
        return relocations.relocation_install_key(user=user, relocation=relocation, password=vm_password(vm))

    def through_the_portal(relocation: Relocation) -> tuple[float, list[float]]:
        """Inspect and plan (not timed), then the move through the worker (timed), with a probe
        polling the VM's address every 50 ms: the longest run of failures is the gap."""
        relocations.relocation_inspect(user=user, relocation=relocation)
        wait_for(
            lambda: Relocation.objects.get(pk=relocation.pk).state != Relocation.State.INSPECTING, timeout=120
        )
        relocation.refresh_from_db()
        plan = relocations.plan_suggestion(relocation)
        assert plan["keep_address"] == str(vm.service_address), plan
        relocation = relocations.relocation_plan(user=user, relocation=relocation, plan=plan)
        gaps: list[float] = []
        stop = threading.Event()

        def probe() -> None:
            down_since: float | None = None
            while not stop.is_set():
                tick = time.perf_counter()
                ok = _answers(url, timeout=0.5)
                now = time.perf_counter()
                if ok and down_since is not None:
                    gaps.append(now - down_since)
                    down_since = None
                elif not ok and down_since is None:
                    down_since = tick
                stop.wait(max(0.0, 0.05 - (time.perf_counter() - tick)))
            if down_since is not None:
                gaps.append(time.perf_counter() - down_since)

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        started = time.perf_counter()
        relocations.relocation_run(user=user, relocation=relocation)
        wait_for(
            lambda: Relocation.objects.get(pk=relocation.pk).state != Relocation.State.RUNNING,
            timeout=600,
            interval=0.1,
        )
        took = time.perf_counter() - started
        time.sleep(1)  # the probe sees the app answer after the last step
        stop.set()
        thread.join()
        relocation.refresh_from_db()
        assert relocation.state == Relocation.State.DONE, relocation.error
        # The next round moves a fresh VM onto the same address: this app goes first.
        assert relocation.app is not None
        gone = services.app_delete(user=user, app=relocation.app)
        wait_for(Operation.objects.filter(pk=gone.pk, status__in=Operation.TERMINAL).exists, timeout=120)
        return took, gaps

    rounds = max(3, ROUNDS // 2)
    raw, portal, gaps = [], [], []
    try:
        for r in range(rounds):  # a fresh VM each round; the two sides take turns going first
            vm_down(vm)  # the last round (or a bench killed earlier) moved its address away
            vm_up(vm, log=lambda _: None)
            relocation = registered(f"bench-vm{r}")
            if r % 2 == 0:
                raw.append(by_hand())
                took, seen = through_the_portal(relocation)
            else:
                took, seen = through_the_portal(relocation)
                vm_down(vm)  # the move stopped the VM's app: a fresh VM for the copy by hand
                vm_up(vm, log=lambda _: None)
                registered(f"bench-vm{r}-raw")  # only for the portal's key on it
                raw.append(by_hand())
            portal.append(took)
            gaps.append(max(seen, default=0.0))
        figure("migration_100mb", "s", statistics.median(portal), statistics.median(raw), rounds=rounds)
        worst = max(gaps)
        figure(
            "cutover_downtime",
            "s",
            worst,
            None,
            rounds=rounds,
            note="" if worst else "no gap at 50 ms resolution (the longest over the rounds)",
        )
    finally:
        for lab_host in lab:
            ids = fleet.docker(lab_host, "ps", "-aq", "--filter", "label=io.slipway.bench=1").stdout.split()
            for r in range(rounds):
                ids += fleet.docker(
                    lab_host, "ps", "-aq", "--filter", f"label=io.slipway.app=bench-vm{r}"
                ).stdout.split()
                netns.sh("rm", "-rf", f"{lab_host.volume_root}/bench-vm{r}")
            if ids:
                fleet.docker(lab_host, "rm", "-f", *ids, check=False)
        vm_down(vm)
        stop_worker(worker, log)


def _answers(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - the lab's own http
            return bool(response.status == 200)
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main_publish() if sys.argv[1:] == ["publish"] else main())
