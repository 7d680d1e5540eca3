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

from apps.hosts.models import Drain, Host
from apps.instances.models import Instance, Operation

log = logging.getLogger(__name__)


def _require_ops(user: Any) -> None:
    if not getattr(user, "is_staff", False):
        raise PermissionDenied("Only ops drain hosts.")


def _live(host: Host) -> list[Instance]:
    return list(
        Instance.objects.filter(host=host)
        .exclude(desired_state=Instance.Desired.REMOVED)
        .select_related("app", "app__base_image", "app__ip_pool")
        .order_by("app__slug", "slot")
    )


def host_drain(*, user: Any, host: Host) -> Drain:
    """Stop new instances going to the host and move its instances away, one at a time."""
    _require_ops(user)
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
        transaction.on_commit(lambda: _send(drain.pk))
    return drain


def host_activate(*, user: Any, host: Host) -> Host:
    """Let the host take instances again; a drain under way stops after its current move."""
    _require_ops(user)
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        if host.state != Host.State.DRAINING:
            raise ValidationError(f"{host.name} is {host.get_state_display().lower()}, not draining.")
        Drain.objects.filter(host=host, state=Drain.State.RUNNING).update(
            state=Drain.State.CANCELLED, finished_at=timezone.now()
        )
        host.state = Host.State.ACTIVE
        host.save(update_fields=["state"])
    return host


def _send(drain_id: int) -> None:
    from apps.hosts import tasks

    try:
        tasks.drain.delay(drain_id)
    except Exception as exc:  # kombu raises several families for a broker that is down
        log.warning("drain %s waits: broker unreachable: %s", drain_id, exc)
        Drain.objects.filter(pk=drain_id).update(
            error=f"The task queue is unreachable right now ({type(exc).__name__}); the drain starts when it is back."
        )


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
    """Move the host's instances away, one at a time, each as a MOVE operation run here."""
    from apps.catalog.services import instance_move
    from apps.instances import executor, placement

    drain = (
        Drain.objects.select_related("host", "started_by")
        .filter(pk=drain_id, state=Drain.State.RUNNING)
        .first()
    )
    if drain is None:
        return
    host = drain.host
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
            executor.run_operation(op.pk)
            deadline = time.monotonic() + wait
            while True:
                op.refresh_from_db()
                if op.status in Operation.TERMINAL:
                    break
                if time.monotonic() > deadline:
                    raise ValidationError(
                        f"moving {instance.container_name} did not finish within {wait:g} s"
                    )
                time.sleep(0.2)
            if op.status != Operation.Status.SUCCEEDED:
                raise ValidationError(
                    f"moving {instance.container_name} to {choice.host.name} failed: {op.error}"
                )
        except (ValidationError, PermissionDenied) as exc:
            message = " ".join(getattr(exc, "messages", [str(exc)]))
            Drain.objects.filter(pk=drain.pk).update(
                state=Drain.State.FAILED, error=message, current="", finished_at=timezone.now()
            )
            log.warning("drain of %s stopped: %s", host.name, message)
            return
        line = f"{instance.container_name} → {choice.host.name} ({time.monotonic() - started:.1f} s)\n"
        drain.refresh_from_db()
        Drain.objects.filter(pk=drain.pk).update(done=drain.done + 1, log=drain.log + line, current="")
    Drain.objects.filter(pk=drain.pk, state=Drain.State.RUNNING).update(
        state=Drain.State.DONE, current="", finished_at=timezone.now()
    )
