"""Thin Celery wrappers: tasks take the relocation's id; its row is the job record."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.utils import timezone

from apps.relocations import runner
from apps.relocations.models import Relocation, Step

log = logging.getLogger(__name__)


@shared_task(name="relocations.inspect", ignore_result=True)
def inspect(relocation_id: int) -> None:
    runner.inspect(relocation_id)


# A run copies, waits for health checks and cuts over: minutes, not the default time limit.
@shared_task(name="relocations.run", ignore_result=True, time_limit=3600, soft_time_limit=3500)
def run(relocation_id: int) -> None:
    runner.run(relocation_id)


@shared_task(name="relocations.rollback", ignore_result=True, time_limit=900)
def rollback(relocation_id: int) -> None:
    runner.rollback_again(relocation_id)


def send(task: Any, relocation_id: int) -> bool:
    """Hand the work to Celery; if the broker is down the row keeps the request and the sweep
    sends it again."""
    try:
        task.delay(relocation_id)
    except Exception as exc:  # kombu raises several families for a broker that is down
        log.warning("relocation %s waits: broker unreachable: %s", relocation_id, exc)
        Relocation.objects.filter(pk=relocation_id).update(
            error=f"The task queue is unreachable right now ({type(exc).__name__}); the request is kept and "
            "runs when it is back."
        )
        return False
    return True


@shared_task(name="relocations.sweep", ignore_result=True)
def sweep(older_than_s: float = 60) -> None:
    """Send again what never reached a worker: inspections still waiting, runs whose first step
    never started."""
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    for relocation in Relocation.objects.filter(state=Relocation.State.INSPECTING, updated_at__lt=cutoff):
        if not relocation.inspections.filter(created_at__gte=relocation.updated_at).exists():
            send(inspect, relocation.pk)
    for relocation in Relocation.objects.filter(state=Relocation.State.RUNNING, updated_at__lt=cutoff):
        steps = relocation.steps.filter(attempt=relocation.attempt)
        if not steps.exclude(state=Step.State.PENDING).exists():
            send(run, relocation.pk)
