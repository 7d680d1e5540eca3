"""Thin Celery wrappers around the alerts services."""

from __future__ import annotations

from celery import shared_task

from apps.alerts import delivery, evaluate, services


@shared_task(name="alerts.evaluate", ignore_result=True)
def evaluate_all() -> None:
    evaluate.evaluate()


@shared_task(name="alerts.deliver", ignore_result=True)
def deliver(pk: int) -> None:
    delivery.deliver(pk)


@shared_task(name="alerts.email", ignore_result=True)
def email(alert_id: int, text: str, emails: list[str]) -> None:
    services.send_email(alert_id, text, emails)


@shared_task(name="alerts.prune", ignore_result=True)
def prune() -> None:
    services.prune()
