"""Thin Celery wrappers: tasks take ids; the row is the job record."""

from __future__ import annotations

from celery import shared_task

from apps.applications.models import App
from apps.instances import executor, reconcile, retention


@shared_task(name="instances.run_operation", ignore_result=True)
def run_operation(op_id: int) -> None:
    executor.run_operation(op_id)


@shared_task(name="instances.reconcile", ignore_result=True)
def reconcile_all() -> None:
    reconcile.reconcile()


@shared_task(name="instances.prune_releases", ignore_result=True)
def prune_releases(app_id: int) -> None:
    """After a deploy, off its critical path: the next deploy does it again if this one is lost."""
    app = App.objects.filter(pk=app_id).first()
    if app is not None:
        retention.prune(app)
