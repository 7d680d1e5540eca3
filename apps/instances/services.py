"""Operations: the job records that the worker claims, and how they are sent to it."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.applications.models import App
from apps.instances.models import Instance, Operation
from portal import jobs

log = logging.getLogger(__name__)


SUMMARY_MAX = Operation._meta.get_field("summary").max_length or 300


def operation_create(
    *,
    app: App,
    kind: str,
    user: Any = None,
    instance: Instance | None = None,
    params: dict[str, Any] | None = None,
    summary: str = "",
) -> Operation:
    """Record a change and send it to a worker once the transaction commits.

    The row is the job: if the broker is unreachable the row stays queued and the
    reconcile sends it again later, so nothing the user asked for is lost.
    """
    op = Operation.objects.create(
        app=app,
        app_slug=app.slug,
        instance=instance,
        kind=kind,
        params=params or {},
        # The column's bound: a long summary is cut, never refused (the params keep the whole).
        summary=summary if len(summary) <= SUMMARY_MAX else summary[: SUMMARY_MAX - 1] + "…",
        requested_by=user if getattr(user, "is_authenticated", False) else None,
    )
    transaction.on_commit(lambda: operation_send(op.pk))
    return op


def operation_send(op_id: int) -> bool:
    """Hand the operation to Celery; False (and noted on the row) if the broker cannot take it
    now: the row stays queued and the reconcile sends it again."""
    return jobs.send(
        "instances.run_operation",
        op_id,
        on_refused=Operation.objects.filter(pk=op_id, status=Operation.Status.QUEUED),
    )


def operations_requeue_stale(
    older_than_s: float, running_longer_than_s: float | None = None, silent_for_s: float | None = None
) -> int:
    """Send again operations still queued long after they were made (the broker was down),
    and those left running by a worker that died (its claim is released: the handlers are
    idempotent, so running one again finishes the job once). A worker that died is one whose
    heartbeat stopped for `silent_for_s`, or, for runs without one, that ran longer than
    `running_longer_than_s`."""
    now = timezone.now()
    ids: list[int] = []
    lost = Q(pk__in=[])
    if running_longer_than_s is not None:
        lost |= Q(started_at__lt=now - timedelta(seconds=running_longer_than_s))
    if silent_for_s is not None:
        lost |= Q(heartbeat_at__lt=now - timedelta(seconds=silent_for_s))
    if running_longer_than_s is not None or silent_for_s is not None:
        stale = Operation.objects.filter(lost, status=Operation.Status.RUNNING)
        ids += list(stale.values_list("pk", flat=True))
        stale.update(
            status=Operation.Status.QUEUED,
            error="Its worker stopped answering (killed or its machine restarted); it runs again.",
        )
    cutoff = now - timedelta(seconds=older_than_s)
    ids += list(
        Operation.objects.filter(status=Operation.Status.QUEUED, created_at__lt=cutoff).values_list(
            "pk", flat=True
        )
    )
    for op_id in sorted(set(ids)):
        operation_send(op_id)
    return len(set(ids))
