"""Operations: the job records that the worker claims, and how they are sent to it."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from apps.applications.models import App
from apps.audit import services as audit
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
    # The audit row of every change made through an operation (by a person, a drain, the
    # reconcile...): its kind, what it says it does, and on which app or instance.
    audit.record(
        f"app.{kind}",
        op.summary or f"{kind} {app.slug}",
        actor=user,
        obj=instance if instance is not None else app,
        team=app.team,
        data={"operation": op.pk, **({"params": params} if params else {})},
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


def operations_stale(
    older_than_s: float, running_longer_than_s: float | None = None, silent_for_s: float | None = None
) -> QuerySet[Operation]:
    """Operations still queued long after they were made (the broker was down), and those left
    running by a worker that died: one whose heartbeat stopped for `silent_for_s`, or, for runs
    without one, that ran longer than `running_longer_than_s`."""
    now = timezone.now()
    lost = Q(pk__in=[])
    if running_longer_than_s is not None:
        lost |= Q(started_at__lt=now - timedelta(seconds=running_longer_than_s))
    if silent_for_s is not None:
        lost |= Q(heartbeat_at__lt=now - timedelta(seconds=silent_for_s))
    cutoff = now - timedelta(seconds=older_than_s)
    return Operation.objects.filter(
        (lost & Q(status=Operation.Status.RUNNING)) | Q(status=Operation.Status.QUEUED, created_at__lt=cutoff)
    )


def operations_requeue_stale(
    older_than_s: float, running_longer_than_s: float | None = None, silent_for_s: float | None = None
) -> int:
    """Send the stale operations (operations_stale) again: a lost worker's claim is released,
    and the handlers are idempotent, so running one again finishes the job once."""
    stale = operations_stale(older_than_s, running_longer_than_s, silent_for_s)
    ids = sorted(stale.values_list("pk", flat=True))
    Operation.objects.filter(pk__in=ids, status=Operation.Status.RUNNING).update(
        status=Operation.Status.QUEUED,
        error="Its worker stopped answering (killed or its machine restarted); it runs again.",
    )
    for op_id in ids:
        operation_send(op_id)
    return len(ids)


HELD = (
    "Not run again: its worker was lost, and the app's containers are newer than the database "
    "(restored from a backup?), so running it on the older record could replace them. Look at the "
    "findings on the hosts' pages, then ask again if it is still wanted."
)


def operations_hold_stale(
    apps: set[int],
    older_than_s: float,
    running_longer_than_s: float | None = None,
    silent_for_s: float | None = None,
) -> list[int]:
    """Fail, instead of sending again, the stale operations of these apps (the reconcile's:
    their containers are newer than the database). Returns their ids."""
    stale = operations_stale(older_than_s, running_longer_than_s, silent_for_s).filter(app_id__in=apps)
    ids = sorted(stale.values_list("pk", flat=True))
    Operation.objects.filter(
        pk__in=ids, status__in=[Operation.Status.QUEUED, Operation.Status.RUNNING]
    ).update(status=Operation.Status.FAILED, error=HELD, finished_at=timezone.now())
    return ids
