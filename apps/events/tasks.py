"""Thin Celery wrappers around the events services."""

from __future__ import annotations

from celery import shared_task

from apps.events import services


@shared_task(name="events.prune", ignore_result=True)
def prune() -> None:
    services.prune()
