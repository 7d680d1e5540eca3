"""`make bench-scale`: the portal driving 400 real instances on 8 lab hosts, on PostgreSQL with
two Celery worker processes (issue 19). Not part of `make bench` or CI: it takes minutes.

What it does now:
1. an 8-host lab, prepared by the portal; a database of its own (`slipway_bench_scale`);
2. 100 apps made through the API, scaled through the API to 400 instances in total (busybox,
   8 MiB, 0.02 CPU: 500 of them fit the 8 hosts x 2 cores without CPU_OVERCOMMIT), timed;
3. `scale_100`: one more app 0 -> 100 across the 8 hosts with the fleet full, beside the same
   100 containers (`docker run -d` of each instance's own spec, same host, same address) run
   raw as parallel as the portal's executor (OPERATION_PARALLELISM at a time);
4. with the fleet full: `reconcile_400` (a pass with nothing to do), `reconcile_10_removed`
   (10 containers removed behind the portal's back, until they run again), `sweep_fleet_400`
   (one metrics sweep of every host, stored);
5. everything removed through the API, then checked: no container, address, instance or app
   row left.
Writes bench/results/scale.json.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
HOSTS = int(os.environ.get("SCALE_HOSTS", "8"))
APPS = int(os.environ.get("SCALE_APPS", "100"))
INSTANCES = int(os.environ.get("SCALE_INSTANCES", "400"))
BROKER = "redis://127.0.0.1:6379/13"
DB_NAME = "slipway_bench_scale"
PASSWORD = (VAR / "pg-password").read_text().strip()
os.environ["DATABASE_URL"] = f"postgres://slipway:{PASSWORD}@127.0.0.1:5432/{DB_NAME}"
os.environ["CELERY_BROKER_URL"] = BROKER
os.environ["MAX_INSTANCES_PER_APP"] = "100"  # scale_100 (the default is 50; an ops setting)
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

from apps.accounts.models import Membership, Team  # noqa: E402
from apps.applications.models import App, BaseImage  # noqa: E402
from apps.hosts.transport import ContainerSpec  # noqa: E402
from apps.instances.models import Instance, Operation  # noqa: E402
from apps.instances.spec import instance_spec  # noqa: E402
from apps.lab import fleet  # noqa: E402
from apps.lab.register import prepare_lab_hosts, register_hosts, register_images, register_pool  # noqa: E402
from apps.network.models import IPAllocation  # noqa: E402
from bench.common import figure, figures, raw_run_args, say  # noqa: E402


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


def start_workers(count: int = 2) -> list[subprocess.Popen[bytes]]:
    """Real Celery worker processes on the bench's database and broker."""
    log = open(VAR / "log" / "bench-scale-workers.log", "ab")  # noqa: SIM115 - lives as long as they do
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                *("-m", "celery", "-A", "portal", "worker", "--concurrency", "1", "-n", f"scale{n}@%h"),
                *("--without-mingle", "--without-gossip", "--loglevel", "WARNING"),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )
        for n in range(count)
    ]
    time.sleep(4)
    return workers


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
    assert sum(len(r) for r in report.repaired.values()) == 10, report.repaired

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

    wait_for(back, 120, "the 10 removed containers back")
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


def main() -> int:
    say(f"setting up: {HOSTS} lab hosts, PostgreSQL {DB_NAME}, 2 workers")
    config = fleet.LabConfig.from_settings(hosts=HOSTS)
    lab = fleet.up(config, log=lambda _: None)
    by_name = {h.name: h for h in lab}
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
    workers = start_workers()

    def api(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = getattr(client, method)(f"/api/v1/{path}", body or {}, content_type="application/json")
        assert response.status_code < 300, (path, response.status_code, response.content[:500])
        return response.json() if response.content else None

    def settled(op_ids: list[int], timeout: float) -> None:
        wait_for(
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
        per_app = [INSTANCES // APPS + (1 if n < INSTANCES % APPS else 0) for n in range(APPS)]
        started = time.perf_counter()
        for n in range(APPS):
            api(
                "post",
                "apps/",
                {
                    "slug": f"s{n:03}",
                    "team": team.slug,
                    "base_image": image.pk,
                    "memory_mb": 8,
                    "cpus": "0.02",
                },
            )
        made = time.perf_counter() - started
        figure("create_100_apps", "s", made, None, rounds=1, note="100 POST /api/v1/apps/ one after another")
        started = time.perf_counter()
        ops = [
            api("post", f"apps/s{n:03}/scale/", {"instances": count})["id"] for n, count in enumerate(per_app)
        ]
        settled(ops, 1800)
        filled = time.perf_counter() - started
        running = Instance.objects.filter(state=Instance.State.RUNNING).count()
        assert running == INSTANCES, running
        figure(
            f"fill_{INSTANCES}",
            "s",
            filled,
            None,
            rounds=1,
            note=f"{APPS} scale calls, {INSTANCES} instances running",
        )
        reconcile_and_sweep(lab)

        # --- scale_100 with the fleet full ---------------------------------------------------
        api(
            "post",
            "apps/",
            {"slug": "big", "team": team.slug, "base_image": image.pk, "memory_mb": 8, "cpus": "0.02"},
        )
        big = App.objects.get(slug="big")
        started = time.perf_counter()
        settled([api("post", "apps/big/scale/", {"instances": 100})["id"]], 900)
        portal = time.perf_counter() - started
        made_specs: list[tuple[fleet.LabHost, ContainerSpec]] = [
            (by_name[i.host.name], instance_spec(i))
            for i in Instance.objects.filter(app=big).select_related("app", "host", "image")
        ]
        spread = {h: sum(1 for lh, _ in made_specs if lh.name == h) for h in by_name}
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
        figure("scale_100", "s", portal, raw, rounds=1, note=f"spread {spread}")
    finally:
        # --- everything removed through the API, then nothing left --------------------------
        ops = [api("delete", f"apps/{app.slug}/")["id"] for app in App.objects.all()]
        try:
            settled(ops, 1800)
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(timeout=60)
    left = {
        "containers": sum(
            len(fleet.docker(h, "ps", "-aq", "--filter", "label=io.slipway.managed=1").stdout.split())
            for h in lab
        ),
        "addresses": IPAllocation.objects.count(),
        "instance_rows": Instance.objects.count(),
        "app_rows": App.objects.count(),
    }
    say(f"left after removing everything: {left}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    document = {"figures": figures, "left": left, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (out / "scale.json").write_text(json.dumps(document, indent=2) + "\n")
    say(f"written to {out / 'scale.json'}")
    return 0 if not any(left.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
