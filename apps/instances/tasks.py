"""Thin Celery wrappers: tasks take ids; the row is the job record."""

from __future__ import annotations

from celery import shared_task

from apps.instances import executor, reconcile


@shared_task(name="instances.run_operation", ignore_result=True)
def run_operation(op_id: int) -> None:
    executor.run_operation(op_id)


@shared_task(name="instances.reconcile", ignore_result=True)
def reconcile_all() -> None:
    reconcile.reconcile()
