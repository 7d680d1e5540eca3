"""The core's signals, handled here (apps.instances.signals)."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from apps.events import services
from apps.instances.signals import container_replaced


@receiver(container_replaced, dispatch_uid="events.container_replaced")
def keep_replaced(sender: Any, **kwargs: Any) -> None:
    services.replaced(
        kwargs["instance"],
        kwargs["host"],
        kwargs["container_id"],
        kwargs["frames"],
        kwargs.get("error", ""),
        kwargs["reason"],
    )
