"""Each host event (a key pinned, a network fixed, checks overridden, an agent installed) is
also a row of the one audit trail. Connected here, above the floor: apps/hosts imports no other
app, so the trail listens for its events instead of being called by it."""

from __future__ import annotations

import re
from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from apps.audit import services as audit
from apps.hosts.models import HostEvent


@receiver(post_save, sender=HostEvent, dispatch_uid="audit_host_event")
def host_event(sender: type[HostEvent], instance: HostEvent, created: bool, **kwargs: Any) -> None:
    if not created:
        return
    verb = re.sub(r"[^a-z0-9]+", "-", instance.action.lower()).strip("-") or "change"
    audit.record(
        f"host.{verb}",
        f"{instance.action} on {instance.host.name}"
        + (f": {instance.detail[:300]}" if instance.detail else ""),
        actor=instance.user,
        obj=instance.host,
    )
