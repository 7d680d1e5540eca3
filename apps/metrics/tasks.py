"""Thin Celery wrappers around the metrics services."""

from __future__ import annotations

from celery import shared_task

from apps.metrics import services


@shared_task(name="metrics.collect", ignore_result=True)
def collect() -> None:
    services.collect_all()


@shared_task(name="metrics.rollup", ignore_result=True)
def rollup() -> None:
    services.rollup()
