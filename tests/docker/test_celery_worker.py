"""A real Celery worker process on a real Redis probes a lab host recorded in the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from apps.hosts import tasks
from apps.hosts.models import Host

ROOT = Path(settings.BASE_DIR)


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def worker(transactional_db: None) -> Iterator[str]:
    """A worker consuming only its own queue, so a `make up` worker never takes these tasks."""
    queue = f"test-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, DATABASE_URL=_database_url())
    log = open(settings.VAR_DIR / "test-worker.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            "--pool",
            "solo",
            "-Q",
            queue,
            "--loglevel",
            "INFO",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield queue
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_a_real_worker_probes_a_host(worker: str, lab_hosts: list[Host]) -> None:
    host = lab_hosts[0]
    Host.objects.filter(pk=host.pk).update(last_checked=None, cpus=None)
    tasks.probe.apply_async(args=(host.pk,), queue=worker)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        host.refresh_from_db()
        if host.last_checked is not None:
            break
        time.sleep(0.2)
    assert host.last_checked is not None, (settings.VAR_DIR / "test-worker.log").read_text()[-3000:]
    assert host.state == Host.State.ACTIVE
    assert host.cpus is not None and host.cpus >= 1
