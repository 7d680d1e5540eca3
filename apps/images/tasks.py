"""Thin Celery wrappers for the catalog: tasks take ids; the row is the job record."""

from __future__ import annotations

from celery import shared_task


# A debootstrap root filesystem takes a minute; loading onto many hosts takes a while more.
@shared_task(name="catalog.publish_image", ignore_result=True, time_limit=3600, soft_time_limit=3540)
def publish_image(image_id: int) -> None:
    from apps.catalog import publish

    publish.run(image_id)
