from __future__ import annotations

from celery import shared_task

from apps.hosts import services
from apps.hosts.models import Host


@shared_task(name="hosts.probe_all", ignore_result=True)
def probe_all() -> None:
    services.hosts_probe_all()


@shared_task(name="hosts.probe", ignore_result=True)
def probe(host_id: int) -> None:
    host = Host.objects.filter(pk=host_id).first()
    if host is not None:
        services.host_probe(host=host)
