"""Deploying a release: the app's instances onto it a batch at a time (one by default).

Each instance's container is recreated from the release in its own slot (same name, static
address, persistent directory and limits) and must pass the release's health check before the
next batch is touched. When one fails, every instance this deploy touched is put back on the
release it ran, a batch at a time behind the same check, and the deploy stops: the app runs the
release before, and says so.

Progress lives in the operation's params ("instances": one row per instance with its state),
written as it changes, so the app page shows it live. A deploy sent again after its worker died
goes on from the rows: instances already on the release are only checked.
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.applications.models import App, Release
from apps.hosts.models import Host
from apps.hosts.transport import HostError
from apps.instances import codefiles, health
from apps.instances.executor import OperationFailed, converge
from apps.instances.models import Instance, Operation
from portal import jobs

log = logging.getLogger(__name__)

# Row states, in the order a row goes through them.
WAITING, RECREATING, CHECKING, DONE = "waiting", "recreating", "checking", "done"
CURRENT, GONE, FAILED, ROLLING_BACK, ROLLED_BACK, SKIPPED = (
    "current",
    "gone",
    "failed",
    "rolling back",
    "rolled back",
    "not started",
)
TOUCHED = {RECREATING, CHECKING, DONE, FAILED}


class _Progress:
    def __init__(self, op: Operation) -> None:
        self.op = op
        self.params: dict[str, Any] = dict(op.params)
        self.rows: list[dict[str, Any]] = [dict(row) for row in self.params.get("instances", [])]

    def set(self, row: dict[str, Any], state: str, detail: str = "", **extra: Any) -> None:
        row.update(state=state, detail=detail, at=timezone.now().isoformat(), **extra)
        self.save()

    def save(self) -> None:
        self.params["instances"] = self.rows
        Operation.objects.filter(pk=self.op.pk).update(params=self.params)


def _live(app: App, row: dict[str, Any]) -> Instance | None:
    return (
        Instance.objects.filter(pk=row["id"], app=app)
        .exclude(desired_state=Instance.Desired.REMOVED)
        .select_related("app__base_image", "app__ip_pool", "host", "image", "release")
        .first()
    )


def run(op: Operation) -> None:
    app = op.app
    if app is None:
        raise OperationFailed("The app no longer exists.")
    target = Release.objects.select_related("base_image").filter(pk=op.params.get("release"), app=app).first()
    if target is None:
        raise OperationFailed("The release to deploy no longer exists.")
    progress = _Progress(op)
    check = health.Check.of(target)
    batch = max(1, int(op.params.get("batch") or 1))
    # A re-run (the worker died) takes up the rows it had started as well as those waiting.
    todo = [row for row in progress.rows if row["state"] in (WAITING, RECREATING, CHECKING)]
    _stage(app, target, todo)
    for start in range(0, len(todo), batch):
        group = todo[start : start + batch]
        failures = _deploy_batch(app, target, group, check, progress)
        if failures:
            _stop(op, app, target, progress, check, batch, failures)
    log.info("deployed release %s of %s", target.number, app.slug)
    retention_after(app)


def _stage(app: App, target: Release, rows: list[dict[str, Any]]) -> None:
    """The release's files onto every host of the deploy at once, before the first instance is
    touched (each instance would otherwise wait for its host's copy in turn). Best effort: a
    host that fails here is tried again, and reported, when its instance is recreated."""
    if target.in_volume or not rows:
        return
    hosts = list(Host.objects.filter(instances__in=[row["id"] for row in rows]).distinct())
    code = codefiles.code_release(target)
    sources = codefiles.peers(app, code) if code.source == Release.Source.HOST else []
    cache: dict[int, bytes] = {}
    if code.source == Release.Source.ARCHIVE and code.archive:
        cache[target.pk] = codefiles.layout_tar(target, code)  # once, not per host

    def ready(host: Host) -> None:
        try:
            codefiles.release_ready(app, host, target, code, sources=sources, cache=cache)
        except (HostError, codefiles.FilesMissing) as exc:
            log.warning("release %s of %s not staged on %s: %s", target.number, app.slug, host.name, exc)

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(hosts))), thread_name_prefix="stage") as pool:
        list(pool.map(ready, hosts))


def _deploy_batch(
    app: App, target: Release, group: list[dict[str, Any]], check: health.Check, progress: _Progress
) -> list[str]:
    """Recreate the group's instances on the release and check them; why each failed."""
    started = time.monotonic()
    instances: list[tuple[dict[str, Any], Instance]] = []
    for row in group:
        instance = _live(app, row)
        if instance is None:
            progress.set(row, GONE, "removed meanwhile")
            continue
        progress.set(row, RECREATING, f"on {instance.host.name}")
        instances.append((row, instance))
    if not instances:
        return []
    Instance.objects.filter(pk__in=[i.pk for _, i in instances]).update(
        release=target, image=target.base_image
    )
    why = _recreate(app, [i for _, i in instances])
    failures = []
    checks = []
    for row, instance in instances:
        fresh = _fresh(instance)
        problem = why.get(instance.pk, "")
        serving = fresh.desired_state == Instance.Desired.RUNNING
        if not problem and serving and health.checkable(fresh, check):
            progress.set(row, CHECKING, check.describe(*health.target(fresh)))
            checks.append((row, fresh))
        elif problem:
            progress.set(row, FAILED, problem)
            failures.append(problem)
        else:
            detail = (
                "running (no health check, or no port to check)"
                if serving
                else "recreated (stopped, as it was)"
            )
            progress.set(row, DONE, detail, seconds=round(time.monotonic() - started, 2))
    for (row, _fresh_instance), answer in zip(checks, _check_all([f for _, f in checks], check), strict=True):
        took = round(time.monotonic() - started, 2)
        if answer:
            progress.set(row, FAILED, answer, seconds=took)
            failures.append(answer)
        else:
            progress.set(row, DONE, f"passed its health check after {took:.1f} s", seconds=took)
    return failures


def _check_all(instances: list[Instance], check: health.Check) -> list[str]:
    if len(instances) <= 1:
        return [health.wait_healthy(i, check) for i in instances]
    with ThreadPoolExecutor(max_workers=min(8, len(instances)), thread_name_prefix="health") as pool:
        return list(pool.map(lambda i: health.wait_healthy(i, check), instances))


def _fresh(instance: Instance) -> Instance:
    return Instance.objects.select_related("app__base_image", "host", "release__base_image").get(
        pk=instance.pk
    )


def _recreate(app: App, instances: list[Instance]) -> dict[int, str]:
    """Converge the instances; for each that did not come up, why."""
    with contextlib.suppress(OperationFailed):  # each instance's row says what went wrong with it
        converge(app, only=instances)
    out = {}
    for instance in instances:
        fresh = Instance.objects.get(pk=instance.pk)
        wanted = (
            Instance.State.RUNNING
            if fresh.desired_state == Instance.Desired.RUNNING
            else Instance.State.STOPPED
        )
        if fresh.state != wanted:
            out[instance.pk] = (
                f"{fresh.container_name} did not start: {fresh.last_error or 'it is ' + fresh.state}"
            )
    return out


def _stop(
    op: Operation,
    app: App,
    target: Release,
    progress: _Progress,
    check: health.Check,
    batch: int,
    failures: list[str],
) -> None:
    """Put every touched instance back on the release it ran, a batch at a time (failed ones
    first: they serve nothing now), and make the app run the release before again."""
    for row in progress.rows:
        if row["state"] == WAITING:
            row["state"] = SKIPPED
    progress.save()
    touched = [r for r in progress.rows if r["state"] in TOUCHED and r.get("from_id") != target.pk]
    touched.sort(key=lambda r: r["state"] != FAILED)
    troubles = []
    for start in range(0, len(touched), batch):
        troubles += _roll_back(app, touched[start : start + batch], progress)
    previous = Release.objects.filter(pk=op.params.get("from"), app=app).first()
    if previous is not None:
        _pin(app, previous)
    back = (
        f" Putting some back failed too ({'; '.join(troubles)}): ops should look at them."
        if troubles
        else f" {len(touched)} instance(s) it had touched run release {op.params.get('from_number')} again."
        if touched
        else ""
    )
    raise OperationFailed(
        f"{failures[0]}.{back} The deploy of release {target.number} stopped; {app.slug} stays on release "
        f"{op.params.get('from_number')}. Fix the release and deploy again."
    )


def _roll_back(app: App, rows: list[dict[str, Any]], progress: _Progress) -> list[str]:
    pairs = []
    for row in rows:
        instance = _live(app, row)
        previous = (
            Release.objects.filter(pk=int(row.get("from_id") or 0), app=app)
            .select_related("base_image")
            .first()
        )
        if instance is None or previous is None:
            progress.set(row, row["state"], f"{row['detail']}; left as it is (gone meanwhile)")
            continue
        progress.set(row, ROLLING_BACK, row["detail"])
        Instance.objects.filter(pk=instance.pk).update(release=previous, image=previous.base_image)
        pairs.append((row, instance, previous))
    if not pairs:
        return []
    why = _recreate(app, [i for _, i, _ in pairs])
    troubles = []
    for row, instance, previous in pairs:
        problem = why.get(instance.pk, "")
        fresh = _fresh(instance)
        if not problem and fresh.desired_state == Instance.Desired.RUNNING:
            problem = health.wait_healthy(fresh, health.Check.of(previous))
        if problem:
            progress.set(
                row,
                FAILED,
                f"{row['detail']}; putting it back on release {previous.number} failed too: {problem}",
            )
            troubles.append(problem)
        else:
            progress.set(row, ROLLED_BACK, f"{row['detail']}; back on release {previous.number} and healthy")
    return troubles


@transaction.atomic
def _pin(app: App, release: Release) -> None:
    """The app runs this release: its configuration is the release's (what the edit form shows
    and new instances get)."""
    fields = {name: getattr(release, name) for name in Release.CONFIG_FIELDS}
    App.objects.filter(pk=app.pk).update(release=release, updated_at=timezone.now(), **fields)


def retention_after(app: App) -> None:
    """After a deploy: the releases retention no longer keeps lose their files, in a task of its
    own, so the deploy is done without waiting for it (best effort: a lost task, or a host that
    cannot be reached, leaves them until the next deploy)."""
    jobs.send("instances.prune_releases", app.pk)
