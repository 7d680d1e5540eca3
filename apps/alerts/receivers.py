"""What the hosts report as it happens raises alerts at once and goes to lifecycle webhooks:
a recorded container event (apps.events) is handled here, in the process that recorded it."""

from __future__ import annotations

import logging
from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from apps.alerts import delivery
from apps.alerts.models import Kind, Webhook
from apps.alerts.services import Subject, fire, webhooks_for
from apps.events.models import ContainerEvent

log = logging.getLogger(__name__)

# Container events as lifecycle webhooks: what a load balancer or service registry follows.
LIFECYCLE = {
    ContainerEvent.Kind.STARTED: "instance.started",
    ContainerEvent.Kind.RESTARTED: "instance.started",
    ContainerEvent.Kind.STOPPED: "instance.stopped",
    ContainerEvent.Kind.DIED: "instance.died",
}


@receiver(post_save, sender=ContainerEvent, dispatch_uid="alerts.container_event")
def container_event(sender: Any, instance: ContainerEvent, created: bool, **kwargs: Any) -> None:
    if not created:
        return
    try:
        _alert(instance)
        _lifecycle(instance)
    except Exception:
        # The event itself is recorded whatever happens here; the evaluation catches up.
        log.exception("alerts for %s", instance)


def _alert(event: ContainerEvent) -> None:
    if event.instance is None:
        return
    tail = "\n".join(text for _, _, text in event.lines[-20:])
    if event.kind == ContainerEvent.Kind.OOM or (event.kind == ContainerEvent.Kind.DIED and event.oom):
        subject = Subject.of_instance(Kind.OOM_KILL, event.instance)
        fire(Kind.OOM_KILL, subject, event.summary, tail, event.time)
    elif event.kind == ContainerEvent.Kind.CRASH_LOOP:
        subject = Subject.of_instance(Kind.CRASH_LOOP, event.instance)
        fire(Kind.CRASH_LOOP, subject, event.summary, tail, event.time)


def _lifecycle(event: ContainerEvent) -> None:
    name = LIFECYCLE.get(event.kind)  # type: ignore[call-overload]
    if event.kind == ContainerEvent.Kind.REPLACED and event.detail.startswith("moved"):
        name = "instance.moved"
    if name is None or event.app is None:
        return
    hooks = webhooks_for(event.app.team_id, Webhook.Topic.LIFECYCLE)
    if not hooks:
        return
    payload = {
        "event": name,
        "time": event.time.isoformat(),
        "instance": {
            "app": event.app_slug,
            "slot": event.slot,
            "name": event.container_name,
            "host": event.host_name,
            "address": event.address or (event.instance.address if event.instance else None),
            "container_id": event.container_id,
            "exit_code": event.exit_code,
            "detail": event.detail,
        },
    }
    for hook in hooks:
        delivery.queue(hook, name, payload)
