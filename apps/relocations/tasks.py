"""Thin Celery wrappers: tasks take the relocation's id; its row is the job record
(portal.jobs: claimed, heartbeated, sent again by the reconcile if its worker is lost)."""

from __future__ import annotations

from celery import shared_task

from apps.relocations import runner


@shared_task(name="relocations.inspect", ignore_result=True)
def inspect(relocation_id: int) -> None:
    runner.inspect(relocation_id)


# A run copies, waits for health checks and cuts over: minutes, not the default time limit.
@shared_task(name="relocations.run", ignore_result=True, time_limit=3600, soft_time_limit=3500)
def run(relocation_id: int) -> None:
    runner.run(relocation_id)


# Kept for messages queued before runs took over rollbacks: the run rolls back what is left.
@shared_task(name="relocations.rollback", ignore_result=True, time_limit=3600, soft_time_limit=3500)
def rollback(relocation_id: int) -> None:
    runner.run(relocation_id)
