from __future__ import annotations

import os

from celery import Celery
from celery.signals import task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("slipway")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_finalize.connect
def _schedule(sender: Celery, **kwargs: object) -> None:
    from django.conf import settings

    sender.add_periodic_task(
        settings.HOST_PROBE_INTERVAL, sender.signature("hosts.probe_all"), name="probe hosts"
    )
    sender.add_periodic_task(
        settings.RECONCILE_INTERVAL, sender.signature("instances.reconcile"), name="reconcile instances"
    )
    # Hosts that lack what Prepare makes (a network, a base image version) get it.
    sender.add_periodic_task(
        settings.RECONCILE_INTERVAL, sender.signature("fleet.prepare_wanting"), name="prepare hosts"
    )
    # A sweep that could not run in its interval is worthless later: let it expire.
    sender.add_periodic_task(
        settings.METRICS_INTERVAL,
        sender.signature("metrics.collect", expires=settings.METRICS_INTERVAL),
        name="collect metrics",
    )
    # A pass that could not run in its interval is replaced by the next one.
    sender.add_periodic_task(
        settings.ALERT_INTERVAL,
        sender.signature("alerts.evaluate", expires=settings.ALERT_INTERVAL),
        name="evaluate alerts",
    )
    # Old events, resolved alerts, read notifications and finished deliveries go once an hour.
    sender.add_periodic_task(3600, sender.signature("events.prune"), name="prune events")
    sender.add_periodic_task(3600, sender.signature("alerts.prune"), name="prune alerts")
    sender.add_periodic_task(
        settings.METRICS_ROLLUP_INTERVAL, sender.signature("metrics.rollup"), name="roll up metrics"
    )


@task_prerun.connect
def _audit_origin(**kwargs: object) -> None:
    # What a task changes comes from the worker, unless the task says otherwise (the reconcile).
    from apps.audit.context import Origin, set_origin  # the app registry is ready once tasks run

    set_origin(Origin("worker"))
