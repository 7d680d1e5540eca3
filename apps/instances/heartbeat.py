"""A worker's sign of life for the operation it runs.

While a Celery worker runs an operation, a thread touches the row's heartbeat_at every few
seconds. A worker killed with SIGKILL (or OOM-killed, or on a machine that rebooted) stops
beating; the reconcile sends such an operation again once its heartbeat is older than
OPERATION_HEARTBEAT_LOST, instead of waiting out OPERATION_STALE_AFTER. The handlers are
idempotent, so the second run finishes the job once.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.instances.models import Operation

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, op_id: int, interval: float | None = None) -> None:
        self.op_id = op_id
        self.interval = settings.OPERATION_HEARTBEAT if interval is None else interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{op_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _run(self) -> None:
        prepared = False  # most operations end before the first beat: no connection at all
        try:
            while not self._stop.wait(self.interval):
                try:
                    if not prepared:
                        self._bounded_waits()
                        prepared = True
                    Operation.objects.filter(pk=self.op_id, status=Operation.Status.RUNNING).update(
                        heartbeat_at=timezone.now()
                    )
                except Exception as exc:  # a missed beat only makes the reconcile look sooner
                    log.warning("heartbeat of operation %s: %s", self.op_id, exc)
        finally:
            connection.close()  # this thread's own connection

    def _bounded_waits(self) -> None:
        # A beat never waits long for a lock (a test's transaction may hold the row): a missed
        # beat costs nothing, a blocked thread would hold up the end of the operation.
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SET lock_timeout = '1s'")
            elif connection.vendor == "sqlite":
                cursor.execute("PRAGMA busy_timeout = 1000")
