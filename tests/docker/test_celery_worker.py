"""A real Celery worker process on a real Redis probes a lab host recorded in the test database."""

from __future__ import annotations

import time

from django.conf import settings

from apps.hosts import tasks
from apps.hosts.models import Host


def test_a_real_worker_probes_a_host(worker: None, lab_hosts: list[Host]) -> None:
    host = lab_hosts[0]
    Host.objects.filter(pk=host.pk).update(last_checked=None, cpus=None)
    tasks.probe.delay(host.pk)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        host.refresh_from_db()
        if host.last_checked is not None:
            break
        time.sleep(0.2)
    assert host.last_checked is not None, (settings.VAR_DIR / "test-worker.log").read_text()[-3000:]
    assert host.state == Host.State.ACTIVE
    assert host.cpus is not None and host.cpus >= 1
