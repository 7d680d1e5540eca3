"""Thin Celery wrappers: tasks take ids; the row is the job record."""

from __future__ import annotations

from celery import shared_task

from apps.images import publish


# A debootstrap root filesystem takes a minute; loading onto many hosts takes a while more. The
# task keeps the name it had under the catalog app, so a message queued before an upgrade runs.
@shared_task(name="catalog.publish_image", ignore_result=True, time_limit=3600, soft_time_limit=3540)
def publish_image(image_id: int) -> None:
    publish.run(image_id)
