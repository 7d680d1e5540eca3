"""`make bench-scale`: the portal driving 400 real instances on 8 lab hosts, on PostgreSQL with
two Celery worker processes, a beat and the web server (issue 19). Not part of `make bench` or CI:
it takes minutes.

What it does:
1. an 8-host lab, prepared by the portal; a database of its own (`slipway_bench_scale`); the
   portal's own processes as in production: daphne (web), two Celery workers, beat, the
   event watcher;
2. 100 apps made through the API, scaled through the API to 400 instances in total (busybox,
   8 MiB, 0.1 CPU, with CPU_OVERCOMMIT 8), timed: half the apps with 2 instances, half with 6.
   Placement spreads each app over hosts and packs by best fit: 100 instances on each of two
   hosts, 50 on each of four, two hosts empty, as it would on a real fleet;
3. with the fleet full: `reconcile_400` (a pass with nothing to do), `reconcile_10_removed`
   (10 containers removed behind the portal's back, until they run again), `sweep_fleet_400`
   (one metrics sweep of every host, stored);
4. `scale_100`: one more app 0 -> 100, spread over the 8 hosts, beside the same 100 containers
   (`docker run -d` of each instance's own spec, same host, same address) run raw as parallel
   as the portal's executor (OPERATION_PARALLELISM at a time); then the portal's scale once
   more while a reader fetches the app list, an app page and its 24 h chart over HTTP from
   daphne, one after another without pause (`page_p95_under_load`, beside the same pages with
   the workers idle);
5. `drain_50`: a host holding 50 instances drained through the API while every instance on it
   is probed over TCP every 50 ms: the drain's time, and the longest time any app had fewer
   instances serving than it wanted;
6. `portal_rss`: the resident memory of web, workers (with their pool processes), beat and the
   event watcher,
   sampled every half second through all of the above, at its peak;
7. everything removed through the API, the volumes the deleted apps left purged as ops do, then
   checked: no container, address, volume, instance or app row left.
Writes bench/results/scale.json.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import select
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
HOSTS = int(os.environ.get("SCALE_HOSTS", "8"))
APPS = int(os.environ.get("SCALE_APPS", "100"))
INSTANCES = int(os.environ.get("SCALE_INSTANCES", "400"))
BROKER = "redis://127.0.0.1:6379/13"
WEB_PORT = 8791
DB_NAME = "slipway_bench_scale"
PASSWORD = (VAR / "pg-password").read_text().strip()
os.environ["DATABASE_URL"] = f"postgres://slipway:{PASSWORD}@127.0.0.1:5432/{DB_NAME}"
os.environ["CELERY_BROKER_URL"] = BROKER
os.environ["MAX_INSTANCES_PER_APP"] = "100"  # scale_100 (the default is 50; an ops setting)
# 0.1 CPU each: a smaller CPU limit throttles the container's own start (runc's init runs in
# its cgroup: at 0.01 CPU a busybox start takes 2 s instead of 0.3). 400 x 0.1 CPU on 8 x 2
# cores needs CPU overcommit, as ops set it for a fleet of small, mostly idle apps.
os.environ["CPU_OVERCOMMIT"] = "8"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


def _fresh_database() -> None:
    import psycopg

    with psycopg.connect(f"postgresql://slipway:{PASSWORD}@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")


_fresh_database()

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from django.urls import reverse  # noqa: E402

from apps.accounts.models import Membership, Team  # noqa: E402
from apps.applications.models import App, BaseImage, RetainedVolume  # noqa: E402
from apps.hosts.models import Host  # noqa: E402
from apps.hosts.transport import ContainerSpec  # noqa: E402
from apps.instances.models import Instance, Operation  # noqa: E402
from apps.instances.spec import instance_spec  # noqa: E402
from apps.lab import fleet  # noqa: E402
from apps.lab.register import prepare_lab_hosts, register_hosts, register_images, register_pool  # noqa: E402
from apps.network.models import IPAllocation  # noqa: E402
from bench.common import commit, figure, figures, machine, raw_run_args, say, wait_for  # noqa: E402


def poll(check: Callable[[], bool], timeout: float, what: str) -> None:
    """wait_for at a tenth of a second: the bench's own polling stays out of what it measures."""
    wait_for(check, timeout, what, interval=0.1)


def start_portal(workers: int = 2) -> dict[str, list[subprocess.Popen[bytes]]]:
    """The portal's processes on the bench's database and broker, as `make up` runs them:
    daphne serving the ASGI application, Celery workers (one pool process each), beat and the
    event watcher."""
    log = open(VAR / "log" / "bench-scale-portal.log", "ab")  # noqa: SIM115 - lives as long as they do
    env = dict(os.environ)

    def spawn(*argv: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)

    # As scripts/services.sh runs them: workers and beat at a lower CPU priority than the web.
    celery = ("nice", "-n", "10", sys.executable, "-m", "celery", "-A", "portal")
    quiet = ("--loglevel", "WARNING")
    processes = {
        "web": [
            spawn(
                str(Path(sys.executable).parent / "daphne"),
                "-b",
                "127.0.0.1",
                "-p",
                str(WEB_PORT),
                "portal.asgi:application",
            )
        ],
        "workers": [
            spawn(
                *celery,
                "worker",
                "--concurrency",
                "1",
                "--queues",
                "celery,builds",
                "-n",
                f"scale{n}@%h",
                "--without-mingle",
                "--without-gossip",
                *quiet,
            )
            for n in range(workers)
        ],
        "beat": [spawn(*celery, "beat", "--schedule", str(VAR / "bench-scale-beat-schedule"), *quiet)],
        "events": [spawn("nice", "-n", "10", sys.executable, "manage.py", "watch_events")],
    }

    def answers() -> bool:
        try:
            return _get("/healthz")[0] == 200
        except OSError:
            return False

    poll(answers, 60, f"daphne on 127.0.0.1:{WEB_PORT}")
    time.sleep(3)  # the workers connect to the broker
    return processes


def stop_portal(processes: dict[str, list[subprocess.Popen[bytes]]]) -> None:
    every = [p for group in processes.values() for p in group]
    for process in every:
        process.terminate()
    for process in every:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _get(path: str, cookie: str = "") -> tuple[int, float]:
    """GET a page from daphne as a browser would (a new connection): (status, seconds)."""
    connection = http.client.HTTPConnection("127.0.0.1", WEB_PORT, timeout=30)
    started = time.perf_counter()
    try:
        connection.request("GET", path, headers={"Cookie": f"sessionid={cookie}"} if cookie else {})
        response = connection.getresponse()
        response.read()
        return response.status, time.perf_counter() - started
    finally:
        connection.close()


class PageReader(threading.Thread):
    """One person reading pages, one after another, until stopped: the seconds each took."""

    def __init__(self, pages: list[str], cookie: str) -> None:
        super().__init__(daemon=True)
        self.pages, self.cookie = pages, cookie
        self.took: dict[str, list[float]] = {page: [] for page in pages}
        self.stop = threading.Event()
        self.error = ""

    def run(self) -> None:
        while not self.stop.is_set():
            for page in self.pages:
                status, seconds = _get(page, self.cookie)
                if status != 200:
                    self.error = f"{page} answered {status}"
                    return
                self.took[page].append(seconds)


@contextlib.contextmanager
def reading(pages: list[str], cookie: str) -> Iterator[PageReader]:
    """A PageReader for the duration of the block; its pages all answered 200."""
    reader = PageReader(pages, cookie)
    reader.start()
    try:
        yield reader
    finally:
        reader.stop.set()
        reader.join()
    assert not reader.error, reader.error


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else max(values, default=0.0)


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(c) for task in tasks for c in (task / "children").read_text().split()]
    except OSError:
        return []


class RssSampler(threading.Thread):
    """Resident memory of each role's processes and their children (a worker's pool process),
    every half second; the peak of each role and of their sum."""

    def __init__(self, processes: dict[str, list[subprocess.Popen[bytes]]]) -> None:
        super().__init__(daemon=True)
        self.processes = processes
        self.peak: dict[str, int] = dict.fromkeys(processes, 0)
        self.peak_total = 0
        self.stop = threading.Event()

    def sample(self) -> None:
        total = 0
        for role, group in self.processes.items():
            pids = [p.pid for p in group]
            pids += [c for pid in pids for c in _children(pid)]
            kib = sum(_rss_kib(pid) for pid in pids)
            self.peak[role] = max(self.peak[role], kib)
            total += kib
        self.peak_total = max(self.peak_total, total)

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self.sample()


class ServingProbe(threading.Thread):
    """Every 50 ms, a TCP connect to each watched address at once (non-blocking): an address not
    answering within the round is down. Per group (an app), the longest run of rounds in which
    any of its addresses was down: how long it had fewer instances serving than it wanted.

    `watched` says which addresses to probe in a round (default: all). Probing 100 busybox
    httpds 20 times a second would itself load the lab (a fork per connection); a drain moves
    one instance at a time, so the bench watches the one moving, the one before, and any down."""

    ROUND = 0.05

    def __init__(
        self, groups: dict[str, list[str]], port: int, watched: Callable[[], set[str]] | None = None
    ) -> None:
        super().__init__(daemon=True)
        self.groups, self.port = groups, port
        self.watched = watched or (lambda: {a for group in groups.values() for a in group})
        self.down_since: dict[str, float | None] = dict.fromkeys(groups)
        self.longest: dict[str, float] = dict.fromkeys(groups, 0.0)
        self.rounds = 0
        self.stop = threading.Event()

    def answering(self, addresses: set[str]) -> set[str]:
        sockets: dict[socket.socket, str] = {}
        for address in addresses:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex((address, self.port))
            sockets[sock] = address
        up: set[str] = set()
        deadline = time.perf_counter() + self.ROUND * 0.8
        pending = set(sockets)
        while pending and (left := deadline - time.perf_counter()) > 0:
            _, ready, _ = select.select([], list(pending), [], left)
            for sock in ready:
                pending.discard(sock)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    up.add(sockets[sock])
        for sock in sockets:
            sock.close()
        return up

    def run(self) -> None:
        while not self.stop.is_set():
            tick = time.perf_counter()
            down = {
                a for name, since in self.down_since.items() if since is not None for a in self.groups[name]
            }
            probed = self.watched() | down
            up = self.answering(probed)
            for name, group in self.groups.items():
                since = self.down_since[name]
                if all(a in up for a in group if a in probed):
                    if since is not None:
                        self.longest[name] = max(self.longest[name], tick - since)
                        self.down_since[name] = None
                elif since is None:
                    self.down_since[name] = tick
            self.rounds += 1
            self.stop.wait(max(0.0, self.ROUND - (time.perf_counter() - tick)))
        for name, since in self.down_since.items():
            if since is not None:
                self.longest[name] = max(self.longest[name], time.perf_counter() - since)


def reconcile_and_sweep(lab: list[fleet.LabHost]) -> None:
    """With the fleet full: one reconcile pass with nothing to do (and its SQL queries); 10
    containers removed behind the portal's back and the time until all 10 run again (a pass,
    then the worker's repair); one metrics sweep of every host, stored."""
    import random

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.instances import reconcile
    from apps.metrics import services as metrics

    idle = []
    for _ in range(3):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            report = reconcile.reconcile()
            idle.append(time.perf_counter() - started)
        assert not report.repaired and not report.unreachable, report
    note = f"nothing to do; {len(queries)} SQL queries"
    figure(f"reconcile_{INSTANCES}", "s", statistics.median(idle), None, rounds=3, note=note)

    # The same 10 each run (a seeded choice, not a secret).
    victims = random.Random(19).sample(list(Instance.objects.select_related("host")), 10)  # noqa: S311
    by_name = {h.name: h for h in lab}
    started = time.perf_counter()
    for instance in victims:
        fleet.docker(by_name[instance.host.name], "rm", "-f", instance.container_name)
    report = reconcile.reconcile()
    # (the beat's own reconcile may have been first for some of them)
    assert sum(len(r) for r in report.repaired.values()) <= 10, report.repaired

    def back() -> bool:
        for instance in victims:
            state = fleet.docker(
                by_name[instance.host.name],
                "inspect",
                "-f",
                "{{.State.Running}}",
                instance.container_name,
                check=False,
            )
            if state.stdout.strip() != "true":
                return False
        return True

    poll(back, 120, "the 10 removed containers back")
    note = "docker rm -f of 10 instances, one reconcile pass, until all 10 run again"
    figure("reconcile_10_removed", "s", time.perf_counter() - started, None, rounds=1, note=note)

    metrics.collect_all()  # the agents learn the containers (the first sweep inspects each)
    walls, stored = [], []
    for _ in range(3):
        started = time.perf_counter()
        swept = metrics.collect_all()
        walls.append(time.perf_counter() - started)
        assert not swept.failed, swept.failed
        stored.append(swept.stored)
    wall, per_sweep = statistics.median(walls), statistics.median(stored)
    note = f"{len(lab)} hosts, {per_sweep:.0f} samples stored per sweep, {per_sweep / wall:.0f} samples/s"
    figure(f"sweep_fleet_{INSTANCES}", "s", wall, None, rounds=3, note=note)


def instance_counts() -> list[int]:
    """Instances per app: half the apps with 2, the others sharing the rest (6 each at 100 apps
    and 400 instances). Spread and best fit then leave hosts of 100, of 50 and empty ones."""
    half = APPS // 2
    rest, others = INSTANCES - 2 * half, APPS - half
    return [2] * half + [rest // others + (1 if n < rest % others else 0) for n in range(others)]


DRAINED = 50  # drain_50: the host drained holds this many instances (or the nearest count)


def drain_one(client: Client) -> None:
    """`drain_50`: drain a host holding 50 instances through the API, with every instance on it
    probed over TCP every 50 ms until the drain is done."""
    from apps.fleet.models import Drain

    host = min(Host.objects.order_by("name"), key=lambda h: abs(h.instances.count() - DRAINED))
    moving = list(Instance.objects.filter(host=host).select_related("app"))
    groups: dict[str, list[str]] = {}
    for instance in moving:
        assert instance.address, instance  # every instance of the bench has its pool address
        groups.setdefault(instance.app.slug, []).append(instance.address)
    check = ServingProbe(groups, port=8080)  # every address, before the drain
    check.start()
    time.sleep(1)

    def down() -> list[str]:
        return [f"{app} {groups[app]}" for app, since in check.down_since.items() if since is not None]

    try:
        poll(lambda: not down(), 30, "every instance on the host answering before the drain")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}: {down()[:10]}") from None
    finally:
        check.stop.set()
        check.join()
    address_of = {i.container_name: i.address or "" for i in moving}
    recent: list[str] = []

    def watched() -> set[str]:
        # The move under way, as the drain names it ("slw-s001-2 → lab-h5"), and the one before.
        from django.db import connection

        current = Drain.objects.filter(host=host).values_list("current", flat=True).first() or ""
        connection.close()  # this thread's own connection, not kept between rounds
        name = current.split(" ")[0]
        if name in address_of and (not recent or recent[-1] != name):
            recent.append(name)
        return {address_of[n] for n in recent[-2:]}

    probe = ServingProbe(groups, port=8080, watched=watched)
    probe.start()
    started = time.perf_counter()
    response = client.post(f"/api/v1/hosts/{host.pk}/drain/", content_type="application/json")
    assert response.status_code < 300, response.content
    poll(
        lambda: Drain.objects.filter(host=host).exclude(state=Drain.State.RUNNING).exists(),
        1800,
        f"the drain of {host.name}",
    )
    took = time.perf_counter() - started
    time.sleep(1)  # the probe sees the last moved instance answer
    probe.stop.set()
    probe.join()
    drain = Drain.objects.get(host=host)
    assert drain.state == Drain.State.DONE, (drain.state, drain.error)
    assert not Instance.objects.filter(host=host).exists()
    moves = [float(line.rsplit("(", 1)[1].split(" s)")[0]) for line in drain.log.splitlines() if "(" in line]
    worst_app, worst = max(probe.longest.items(), key=lambda item: item[1])
    note = (
        f"{host.name}: {len(moving)} instances of {len(groups)} apps moved one at a time, "
        f"median move {statistics.median(moves):.2f} s; longest an app served with one instance "
        f"fewer: {worst:.2f} s ({worst_app}), median over the apps "
        f"{statistics.median(probe.longest.values()):.2f} s (TCP connect every 50 ms)"
    )
    figure(f"drain_{DRAINED}", "s", took, None, rounds=1, note=note)
    figure("drain_underserved_longest", "s", worst, None, rounds=1, note=f"{worst_app}; see drain_{DRAINED}")


BENCH_NAMES = re.compile(r"^(slw-(s\d{3}|big)-\d+|raw-slw-.*)$")
BENCH_APPS = re.compile(r"^(s\d{3}|big)$")


def bench_volumes(lab: list[fleet.LabHost]) -> list[Path]:
    """The bench apps' volume directories on the lab hosts (which share this filesystem)."""
    return [
        path
        for lab_host in lab
        if lab_host.volume_root.is_dir()
        for path in lab_host.volume_root.iterdir()
        if BENCH_APPS.match(path.name)
    ]


def remove_leftovers(lab: list[fleet.LabHost]) -> int:
    """Containers and volumes an interrupted run left on the lab hosts (its apps' and its raw
    ones), removed; how many. Others on the shared lab hosts (a dev portal's) are left alone."""
    gone = 0
    for lab_host in lab:
        names = fleet.docker(lab_host, "ps", "-a", "--format", "{{.Names}}").stdout.split()
        doomed = [name for name in names if BENCH_NAMES.match(name)]
        if doomed:
            fleet.docker(lab_host, "rm", "-f", *doomed)
            gone += len(doomed)
    for path in bench_volumes(lab):
        shutil.rmtree(path)
        gone += 1
    return gone


def purge_volumes(ops: Client) -> None:
    """What deleting the apps left on the hosts' disks (kept for ops, listed on each host's
    page), purged as ops do it there."""
    for volume in RetainedVolume.objects.filter(purged_at=None):
        url = reverse("hosts:purge-volume", args=[volume.host_id, volume.pk])
        response = ops.post(url)
        assert response.status_code == 200, (volume.path, response.status_code, response.content[:300])


def main() -> int:
    say(f"setting up: {HOSTS} lab hosts, PostgreSQL {DB_NAME}, daphne, 2 workers, beat, event watcher")
    config = fleet.LabConfig.from_settings(hosts=HOSTS)
    lab = fleet.up(config, log=lambda _: None)
    by_name = {h.name: h for h in lab}
    if left_before := remove_leftovers(lab):
        say(f"removed {left_before} containers an interrupted run left")
    call_command("migrate", verbosity=0)
    hosts = register_hosts(lab, log=lambda _: None)
    register_images(("busybox",), log=lambda _: None)
    register_pool(config, hosts, log=lambda _: None, first="10.213.160.1", last="10.213.199.254")
    prepare_lab_hosts(hosts, log=lambda _: None)
    redis.Redis.from_url(BROKER).flushdb()
    team = Team.objects.create(slug="scale", name="Scale")
    user = User.objects.create_user("scale")
    Membership.objects.create(team=team, user=user, role=Membership.Role.DEVELOPER)
    image = BaseImage.objects.get(name="slipway/busybox", tag="1")
    client = Client()
    client.force_login(user)
    cookie = client.cookies["sessionid"].value  # the reader's browser session
    ops = Client()
    ops.force_login(User.objects.create_user("scale-ops", is_staff=True))
    processes = start_portal()
    rss = RssSampler(processes)
    rss.start()
    small = {"team": team.slug, "base_image": image.pk, "memory_mb": 8, "cpus": "0.1"}

    def api(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = getattr(client, method)(f"/api/v1/{path}", body or {}, content_type="application/json")
        assert response.status_code < 300, (path, response.status_code, response.content[:500])
        return response.json() if response.content else None

    def settled(op_ids: list[int], timeout: float) -> None:
        poll(
            lambda: (
                Operation.objects.filter(pk__in=op_ids, status__in=Operation.TERMINAL).count() == len(op_ids)
            ),
            timeout,
            f"{len(op_ids)} operations",
        )
        failed = list(
            Operation.objects.filter(pk__in=op_ids)
            .exclude(status=Operation.Status.SUCCEEDED)
            .values("pk", "error")
        )
        assert not failed, failed[:5]

    try:
        # --- 100 apps, 400 instances -------------------------------------------------------
        per_app = instance_counts()
        started = time.perf_counter()
        for n in range(APPS):
            api("post", "apps/", {"slug": f"s{n:03}", **small})
        made = time.perf_counter() - started
        figure("create_100_apps", "s", made, None, rounds=1, note="100 POST /api/v1/apps/ one after another")
        started = time.perf_counter()
        ops_ids = [
            api("post", f"apps/s{n:03}/scale/", {"instances": count})["id"] for n, count in enumerate(per_app)
        ]
        settled(ops_ids, 1800)
        filled = time.perf_counter() - started
        running = Instance.objects.filter(state=Instance.State.RUNNING).count()
        assert running == INSTANCES, running
        spread = {h.name: h.instances.count() for h in Host.objects.order_by("name")}
        figure(
            f"fill_{INSTANCES}",
            "s",
            filled,
            None,
            rounds=1,
            note=f"{APPS} scale calls, {INSTANCES} instances running; per host {spread}",
        )
        reconcile_and_sweep(lab)

        # --- the pages with the workers idle, then scale_100 with the fleet full ------------
        pages = ["/apps/", "/apps/s000/", "/api/v1/apps/s000/metrics/?range=24h"]
        with reading(pages, cookie) as idle:
            time.sleep(10)
        api("post", "apps/", {"slug": "big", **small})
        big = App.objects.get(slug="big")

        def scale_big() -> float:
            started = time.perf_counter()
            settled([api("post", "apps/big/scale/", {"instances": 100})["id"]], 900)
            return time.perf_counter() - started

        portal = scale_big()
        made_specs: list[tuple[fleet.LabHost, ContainerSpec]] = [
            (by_name[i.host.name], instance_spec(i))
            for i in Instance.objects.filter(app=big).select_related("app", "host", "image")
        ]
        big_spread = {h: sum(1 for lh, _ in made_specs if lh.name == h) for h in by_name}
        settled([api("post", "apps/big/scale/", {"instances": 0})["id"]], 900)
        # Raw: the same 100 containers, each on its host, as parallel as the portal's executor
        # (OPERATION_PARALLELISM `docker run -d` at a time across the fleet).
        from django.conf import settings

        def run_one(item: tuple[fleet.LabHost, ContainerSpec]) -> None:
            fleet.docker(item[0], *raw_run_args(item[1], f"raw-{item[1].name}"))

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=settings.OPERATION_PARALLELISM) as pool:
            list(pool.map(run_one, made_specs))
        raw = time.perf_counter() - started
        for lab_host, spec in made_specs:
            fleet.docker(lab_host, "rm", "-f", f"raw-{spec.name}")
        figure("scale_100", "s", portal, raw, rounds=1, note=f"spread {big_spread}")

        # The same scale once more, with the reader: the lab shares this machine's two cores
        # with the portal and yields them to it (apps/lab/fleet.py), so pages read without pause
        # slow the lab's hosts as they could not slow real ones; scale_100 is timed without it.
        with reading(pages, cookie) as reader:
            under_load = scale_big()
        settled([api("post", "apps/big/scale/", {"instances": 0})["id"]], 900)
        loaded = [t for page in pages for t in reader.took[page]]
        per_page = ", ".join(
            f"{page} {p95(reader.took[page]) * 1000:.0f} ms (idle {p95(idle.took[page]) * 1000:.0f})"
            for page in pages
        )
        figure(
            "page_p95_under_load",
            "ms",
            p95(loaded) * 1000,
            p95([t for page in pages for t in idle.took[page]]) * 1000,
            rounds=len(loaded),
            note=(
                f"while the portal scales 0 -> 100 again ({under_load:.1f} s with the reader), beside "
                f"the same pages with the workers idle; p95 per page: {per_page}"
            ),
        )

        # --- drain the fullest host ----------------------------------------------------------
        drain_one(ops)
    finally:
        # --- everything removed through the API, then nothing left --------------------------
        from django.db import connection

        connection.close()  # an interrupted query leaves it unusable
        try:
            settled([api("delete", f"apps/{app.slug}/")["id"] for app in App.objects.all()], 1800)
            purge_volumes(ops)
        finally:
            rss.stop.set()
            rss.join()
            stop_portal(processes)
    roles = ", ".join(f"{role} {kib / 1024:.0f} MiB" for role, kib in rss.peak.items())
    figure(
        "portal_rss", "MiB", rss.peak_total / 1024, None, rounds=1, note=f"peak, sampled every 0.5 s: {roles}"
    )
    left = {
        "containers": sum(
            len(fleet.docker(h, "ps", "-aq", "--filter", "label=io.slipway.managed=1").stdout.split())
            for h in lab
        ),
        "addresses": IPAllocation.objects.count(),
        "instance_rows": Instance.objects.count(),
        "app_rows": App.objects.count(),
        "volumes": len(bench_volumes(lab)),
        "volume_rows_unpurged": RetainedVolume.objects.filter(purged_at=None).count(),
    }
    say(f"left after removing everything: {left}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "figures": figures,
        "left": left,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit(),
        "machine": machine(),
        "hosts": [lab_host.name for lab_host in lab],
    }
    (out / "scale.json").write_text(json.dumps(document, indent=2) + "\n")
    say(f"written to {out / 'scale.json'}")
    return 0 if not any(left.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
