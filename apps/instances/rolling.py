"""Rolling upgrade: the app's instances onto another base image version, one at a time.

Each instance's container is recreated from the new version in its own slot (same name, static
address, volume and limits: only the image differs) and must pass the app's health check
before the next one is touched. One that fails is put back on the version it ran, and the
roll stops there: the others never left their version, so at least N-1 of N kept serving.

Progress lives in the operation's params ("instances": one row per instance with its state),
written as it changes, so the app page shows it live.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.utils import timezone

from apps.applications.models import App, BaseImage
from apps.instances import health
from apps.instances.executor import OperationFailed, converge
from apps.instances.models import Instance, Operation

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


def run(op: Operation) -> None:
    app = op.app
    if app is None:
        raise OperationFailed("The app no longer exists.")
    target = BaseImage.objects.filter(pk=op.params.get("to")).first()
    if target is None:
        raise OperationFailed("The version to roll onto no longer exists.")
    progress = _Progress(op)
    check = health.Check.of(app)
    rolled = 0
    for index, row in enumerate(progress.rows):
        instance = (
            Instance.objects.filter(pk=row["id"], app=app)
            .exclude(desired_state=Instance.Desired.REMOVED)
            .select_related("app__base_image", "app__ip_pool", "host", "image")
            .first()
        )
        if instance is None:
            progress.set(row, GONE, "removed meanwhile")
            continue
        if instance.image_id == target.pk and row["state"] == CURRENT:
            continue
        started = time.monotonic()
        progress.set(row, RECREATING, f"on {instance.host.name}")
        Instance.objects.filter(pk=instance.pk).update(image=target)
        why = _recreate(app, instance)
        serving = instance.desired_state == Instance.Desired.RUNNING
        fresh = _fresh(instance)
        checked = serving and health.checkable(fresh, check)
        if not why and checked:
            progress.set(row, CHECKING, check.describe(*health.target(fresh)))
            why = health.wait_healthy(fresh, check)
        if not why:
            took = time.monotonic() - started
            if checked:
                detail = f"passed its health check after {took:.1f} s"
            elif serving:
                detail = "running (the app has no health check or no port to check)"
            else:
                detail = "recreated (stopped, as it was)"
            progress.set(row, DONE, detail, seconds=round(took, 2))
            rolled += 1
            continue
        progress.set(row, FAILED, why)
        back = _roll_back(app, instance, row, check, progress)
        for later in progress.rows[index + 1 :]:
            if later["state"] == WAITING:
                later["state"] = SKIPPED
        progress.save()
        # The app is pinned to the version it (mostly) runs, so anything new comes up on it.
        App.objects.filter(pk=app.pk).update(base_image_id=op.params["from"])
        on_target = sum(1 for r in progress.rows if r["state"] in (DONE, CURRENT))
        raise OperationFailed(
            f"{why}. {back} The roll stopped: {on_target} of {len(progress.rows)} instance(s) run "
            f"{target.reference}; {app.slug} stays on {op.params.get('from_ref')}. Fix the app or the "
            "version and upgrade again: instances already moved are only checked."
        )
    log.info("rolled %s instance(s) of %s onto %s", rolled, app.slug, target.reference)


def _fresh(instance: Instance) -> Instance:
    return Instance.objects.select_related("app__base_image", "host").get(pk=instance.pk)


def _recreate(app: App, instance: Instance) -> str:
    try:
        converge(app, only=instance)
    except OperationFailed as exc:
        return f"{instance.container_name} did not start on the new version: {exc}"
    return ""


def _roll_back(
    app: App, instance: Instance, row: dict[str, Any], check: health.Check, progress: _Progress
) -> str:
    """Put the instance back on the version it ran; a sentence saying how that went."""
    previous = BaseImage.objects.filter(pk=int(row.get("from_id") or 0)).first()
    if previous is None:
        return f"Its previous version {row.get('from')} no longer exists, so it was left as it is."
    detail = row["detail"]
    progress.set(row, ROLLING_BACK, detail)
    Instance.objects.filter(pk=instance.pk).update(image=previous)
    why = _recreate(app, instance)
    if not why and instance.desired_state == Instance.Desired.RUNNING:
        why = health.wait_healthy(_fresh(instance), check)
    if why:
        progress.set(row, FAILED, f"{detail}; rolling back to {previous.reference} failed too: {why}")
        return f"Putting it back on {previous.reference} failed too ({why}): ops should look at it."
    progress.set(row, ROLLED_BACK, f"{detail}; back on {previous.reference} and healthy")
    return f"{instance.container_name} runs {previous.reference} again and passes its health check."
