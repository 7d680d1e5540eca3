from __future__ import annotations

from celery import shared_task

from apps.fleet import drain as draining
from apps.fleet import prepare as preparing


# One instance after another, each a few seconds: a big host takes a while. The task keeps the
# name it had under the hosts app, so a message queued before an upgrade still finds it.
@shared_task(name="hosts.drain", ignore_result=True, time_limit=6 * 3600, soft_time_limit=6 * 3600 - 60)
def drain(drain_id: int) -> None:
    draining.run(drain_id)


# Installing the agent and loading base images onto one host: minutes at most.
@shared_task(name="fleet.prepare", ignore_result=True, time_limit=3600, soft_time_limit=3600 - 60)
def prepare(preparation_id: int) -> None:
    preparing.run(preparation_id)


@shared_task(name="fleet.prepare_wanting", ignore_result=True)
def prepare_wanting() -> None:
    preparing.prepare_wanting()
