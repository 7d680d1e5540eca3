"""Changes made outside the services: the Django admin (its own log of each save and delete)."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.db.models.signals import post_save
from django.dispatch import receiver

from apps.audit.models import Source
from apps.audit.services import record

VERBS = {ADDITION: "add", CHANGE: "change", DELETION: "delete"}


@receiver(post_save, sender=LogEntry, dispatch_uid="audit_admin_log")
def admin_change(sender: type[LogEntry], instance: LogEntry, created: bool, **kwargs: Any) -> None:
    if not created:
        return
    verb = VERBS.get(instance.action_flag, "change")
    kind = instance.content_type.model if instance.content_type is not None else "object"
    message = instance.get_change_message() or ""
    record(
        f"admin.{verb}",
        f"{verb} {kind} {instance.object_repr}" + (f": {message}" if message else ""),
        actor=instance.user,
        object_type=str(instance.content_type.name if instance.content_type is not None else kind),
        object_id=instance.object_id or "",
        object_repr=instance.object_repr,
        source=Source.ADMIN,
    )
