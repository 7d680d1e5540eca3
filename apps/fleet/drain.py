"""Draining a host: every instance on it is recreated on another host, one at a time, with the
same image, limits, static address and volume data (copied host to host, checksummed).

The Drain row is the job record; the worker moves one instance, records it, and looks at the
row again before the next, so ops can cancel between moves, and a drain run again after a
failure carries on with what is left."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts import permissions
from apps.applications.services import instance_move
from apps.audit import services as audit
from apps.fleet.models import DRAIN, Drain
from apps.hosts.models import Host
from apps.instances import executor, placement
from apps.instances.models import Instance, Operation
from portal import jobs

log = logging.getLogger(__name__)


def _live(host: Host) -> list[Instance]:
    return list(
        Instance.objects.filter(host=host)
        .exclude(desired_state=Instance.Desired.REMOVED)
        .select_related("app", "app__base_image", "app__ip_pool")
        .order_by("app__slug", "slot")
    )


def host_drain(*, user: Any, host: Host) -> Drain:
    """Stop new instances going to the host and move its instances away, one at a time."""
    permissions.require_ops(user, "drain hosts")
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        if host.state == Host.State.PENDING:
            raise ValidationError(f"{host.name}'s key is not confirmed; it has nothing to drain.")
        host.state = Host.State.DRAINING
        host.save(update_fields=["state"])
        try:
            with transaction.atomic():
                drain = Drain.objects.create(host=host, total=len(_live(host)), started_by=user)
        except IntegrityError:
            raise ValidationError(f"{host.name} is being drained already.") from None
        jobs.start(DRAIN, drain.pk)
        audit.record(
            "host.drain", f"drain {host.name} ({drain.total} instances to move)", actor=user, obj=host
        )
    return drain


def host_activate(*, user: Any, host: Host) -> Host:
    """Let the host take instances again; a drain under way stops after its current move."""
    permissions.require_ops(user, "drain hosts")
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        if host.state != Host.State.DRAINING:
            raise ValidationError(f"{host.name} is {host.get_state_display().lower()}, not draining.")
        Drain.objects.filter(host=host, state=Drain.State.RUNNING).update(
            state=Drain.State.CANCELLED, finished_at=timezone.now()
        )
        host.state = Host.State.ACTIVE
        host.save(update_fields=["state"])
        audit.record("host.activate", f"{host.name} takes instances again", actor=user, obj=host)
    return host


def _interleaved(instances: list[Instance]) -> list[Instance]:
    """One instance of each app in turn, so no app has two instances moving one after the other."""
    by_app: dict[int, list[Instance]] = {}
    for instance in instances:
        by_app.setdefault(instance.app_id, []).append(instance)
    out: list[Instance] = []
    while any(by_app.values()):
        for queue in by_app.values():
            if queue:
                out.append(queue.pop(0))
    return out


def run(drain_id: int, wait: float = 300) -> None:
    """The worker's part: claim the drain (a second delivery does nothing), then move what is
    left, with a heartbeat, so a drain whose worker was lost is taken over by the reconcile."""
    if not jobs.claim(DRAIN, drain_id):
        return  # another worker has it, or it ended
    with jobs.Heartbeat.of(DRAIN, drain_id):
        _run(drain_id, wait)


def _wait(op: Operation, wait: float, what: str) -> Operation:
    try:
        return executor.run_or_wait(op, wait)
    except executor.OperationTimeout:
        raise ValidationError(f"moving {what} did not finish within {wait:g} s") from None


def _record(drain: Drain, line: str) -> None:
    drain.refresh_from_db()
    Drain.objects.filter(pk=drain.pk).update(done=drain.done + 1, log=drain.log + line, current="")


def _stop(drain: Drain, message: str) -> None:
    Drain.objects.filter(pk=drain.pk).update(
        state=Drain.State.FAILED, error=message, current="", finished_at=timezone.now()
    )
    log.warning("drain of %s stopped: %s", drain.host.name, message)


def _run(drain_id: int, wait: float) -> None:
    drain = Drain.objects.select_related("host", "started_by").get(pk=drain_id)
    host = drain.host
    # Moves a lost run started: their instances count as moved already (the move rewrote their
    # host), so they are finished, not started again.
    left = Operation.objects.filter(
        kind=Operation.Kind.MOVE, params__from_host=host.pk, created_at__gte=drain.created_at
    ).exclude(status__in=Operation.TERMINAL)
    for op in left.select_related("instance"):
        name = op.instance.container_name if op.instance else op.app_slug
        try:
            op = _wait(op, wait, name)
        except ValidationError as exc:
            _stop(drain, " ".join(exc.messages))
            return
        if op.status != Operation.Status.SUCCEEDED:
            _stop(drain, f"moving {name} failed: {op.error}")
            return
        _record(drain, f"{name} → moved (taken over from a lost worker)\n")
    for instance in _interleaved(_live(host)):
        if not Drain.objects.filter(pk=drain.pk, state=Drain.State.RUNNING).exists():
            return  # cancelled between moves
        started = time.monotonic()
        try:
            [choice] = placement.choose(instance.app, 1, exclude=[host.pk])
            Drain.objects.filter(pk=drain.pk).update(
                current=f"{instance.container_name} → {choice.host.name}"
            )
            op = instance_move(
                user=drain.started_by, instance=instance, host=choice.host, reason=choice.reason
            )
            op = _wait(op, wait, instance.container_name)
            if op.status != Operation.Status.SUCCEEDED:
                raise ValidationError(
                    f"moving {instance.container_name} to {choice.host.name} failed: {op.error}"
                )
        except (ValidationError, PermissionDenied) as exc:
            _stop(drain, " ".join(getattr(exc, "messages", [str(exc)])))
            return
        _record(
            drain, f"{instance.container_name} → {choice.host.name} ({time.monotonic() - started:.1f} s)\n"
        )
    Drain.objects.filter(pk=drain.pk, state=Drain.State.RUNNING).update(
        state=Drain.State.DONE, current="", finished_at=timezone.now()
    )
